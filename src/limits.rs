//! The memory budget: every size that comes from a file or a spec is checked against it before
//! anything is allocated, so that an absurd size is an error naming what asked for it, never an
//! abort of the process.
//!
//! The budget defaults to three quarters of the memory this process may use (the machine's
//! memory, or the control group's limit when lower), read at run time; `convnet --max-memory`
//! and [`set_budget`] change it. Checks are cheap (one atomic load) and live where sizes are
//! known: tensor creation ([`crate::Tensor`]), the data readers, and the training's estimate.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// 0 until set or first read.
static BUDGET: AtomicU64 = AtomicU64::new(0);
/// Whether the budget was set explicitly (the error then names the flag's value).
static EXPLICIT: AtomicU64 = AtomicU64::new(0);

/// Bytes of memory this process may use: the machine's `MemTotal`, or the control group's
/// `memory.max` when it is lower; `None` where neither can be read.
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// The budget in bytes.
pub fn budget() -> u64 {
    let b = BUDGET.load(Ordering::Relaxed);
    if b != 0 {
        return b;
    }
    // 3/4 of the memory, or 8 GiB where it cannot be read
    let b = machine_memory().map_or(8 << 30, |m| m / 4 * 3).max(1);
    BUDGET.store(b, Ordering::Relaxed);
    b
}

/// Set the budget (`--max-memory`) for this process.
pub fn set_budget(bytes: u64) {
    BUDGET.store(bytes.max(1), Ordering::Relaxed);
    EXPLICIT.store(1, Ordering::Relaxed);
}

/// `Ok` when `bytes` fit the budget; otherwise an error saying that `what` needs them.
pub fn check(what: &str, bytes: u64) -> Result<()> {
    check_with(bytes, || what.to_string())
}

/// [`check`] with the description made only when it is needed (on hot paths).
pub fn check_with(bytes: u64, what: impl FnOnce() -> String) -> Result<()> {
    let b = budget();
    if bytes <= b {
        return Ok(());
    }
    let what = what();
    let whence = if EXPLICIT.load(Ordering::Relaxed) != 0 {
        "set with --max-memory"
    } else {
        "3/4 of this machine's memory; set another with --max-memory"
    };
    Err(Error::TooLarge {
        what,
        msg: format!(
            "needs {}, more than the memory budget of {} ({whence})",
            fmt_bytes(bytes),
            fmt_bytes(b)
        ),
    })
}

/// Bytes of `count` f32 values, saturating (a saturated count fails every check).
pub fn f32_bytes(count: usize) -> u64 {
    (count as u64).saturating_mul(4)
}

/// `1.5 GiB`, `320 MiB`, `12 KiB`, `10 B`.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A size as a person writes it: `2G`, `512MiB`, `1.5 GB`, `1000000` (bytes). Binary units
/// (K, M, G, T = powers of 1024) with or without `B` / `iB`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 512M, 4G, 1.5GiB)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        u => return Err(format!("`{s}`: unknown unit `{u}` (use K, M, G or T)")),
    };
    let bytes = v * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is not a usable memory size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5 G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4Q").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(fmt_bytes(3 << 29), "1.5 GiB");
        assert_eq!(fmt_bytes(10), "10 B");
        assert!(machine_memory().is_some_and(|m| m > 0));
    }
}

/// The bytes of the file at `path`, refused before it is read when `factor` times its length
/// (what reading it will hold at most) is beyond the budget.
pub fn read_file(path: &std::path::Path, factor: u64) -> Result<Vec<u8>> {
    let io = |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    check(
        &format!("{}: reading", path.display()),
        len.saturating_mul(factor),
    )?;
    std::fs::read(path).map_err(io)
}
