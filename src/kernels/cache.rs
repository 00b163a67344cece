//! The running CPU's data caches, read once from `/sys/devices/system/cpu/cpu0/cache` (Linux),
//! so that blocking follows the machine a kernel runs on, not the one it was written on.
//! Elsewhere, or where the files are missing, common sizes stand in.

use std::sync::OnceLock;

/// Per-core data cache sizes in bytes (L3: the whole cache, shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caches {
    pub l1d: usize,
    pub l2: usize,
    pub l3: usize,
}

impl Caches {
    /// What stands in where nothing can be read: 32 KiB, 512 KiB, 8 MiB.
    pub const FALLBACK: Caches = Caches {
        l1d: 32 << 10,
        l2: 512 << 10,
        l3: 8 << 20,
    };
}

/// The caches of this machine (read on first use).
pub fn caches() -> Caches {
    static C: OnceLock<Caches> = OnceLock::new();
    *C.get_or_init(|| read_sysfs(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache")))
}

/// `32K`, `1024K`, `8M` as bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

fn read_sysfs(dir: &std::path::Path) -> Caches {
    let mut c = Caches::FALLBACK;
    for i in 0..8 {
        let d = dir.join(format!("index{i}"));
        let read = |f: &str| std::fs::read_to_string(d.join(f)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let Some(size) = parse_size(&size).filter(|&s| s > 0) else {
            continue;
        };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => c.l1d = size,
            ("2", "Unified" | "Data") => c.l2 = size,
            ("3", "Unified" | "Data") => c.l3 = size,
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_missing_files_fall_back() {
        assert_eq!(parse_size("48K\n"), Some(48 << 10));
        assert_eq!(parse_size("1280K"), Some(1280 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("x"), None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_sysfs(dir.path()), Caches::FALLBACK);
        let l2 = dir.path().join("index2");
        std::fs::create_dir(&l2).unwrap();
        for (f, v) in [("level", "2"), ("type", "Unified"), ("size", "1280K")] {
            std::fs::write(l2.join(f), v).unwrap();
        }
        let c = read_sysfs(dir.path());
        assert_eq!((c.l1d, c.l2), (32 << 10, 1280 << 10));
    }
}
