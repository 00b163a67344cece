//! NumPy `.npy` arrays (format versions 1 to 3): a magic string, a header (a Python dict of
//! `descr`, `fortran_order` and `shape`), then the values in C order. Read as f32 (inputs) or
//! class indices (labels); every size in the header is checked against the file's length and
//! the memory budget before the values are read.
//!
//! `.npz` archives (`np.savez`, `np.savez_compressed`, Keras's `mnist.npz`) are zip files of
//! `.npy` members: a member is found by its name, its declared size is checked against the
//! budget, and it is inflated only as far as that size.

use std::path::Path;

use crate::error::{Error, Result};

/// An array's shape and values, as f32.
pub struct Npy {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    /// Whether the values were unsigned bytes (images in 0..=255).
    pub bytes: bool,
}

fn fail(path: &Path, msg: String) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg,
    }
}

/// The value of `key` in the header dict (`'descr': '<f4'` gives `<f4`).
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(r) = rest.strip_prefix('\'') {
        r.find('\'')? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Read the `.npy` file at `path`.
pub fn read_npy(path: &Path) -> Result<Npy> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    parse_npy(&bytes, path)
}

/// The names of the arrays in the `.npz` archive at `path`, in the archive's order.
pub fn npz_names(path: &Path) -> Result<Vec<String>> {
    Ok(arrays(&open_npz(path)?))
}

fn arrays(zip: &zip::ZipArchive<std::fs::File>) -> Vec<String> {
    zip.file_names()
        .filter_map(|n| Some(n.ok()?.strip_suffix(".npy")?.to_string()))
        .collect()
}

/// The array `name` of the `.npz` archive at `path` (the member `name.npy`).
pub fn read_npz(path: &Path, name: &str) -> Result<Npy> {
    use std::io::Read;
    let mut zip = open_npz(path)?;
    let member = format!("{name}.npy");
    let held = arrays(&zip);
    let entry = zip.by_name(&member).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => {
            let names: Vec<String> = held.iter().map(|n| format!("`{n}`")).collect();
            fail(
                path,
                format!(
                    "no array `{name}` in the archive (it holds {})",
                    if names.is_empty() {
                        "no arrays".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        }
        e => fail(path, format!("array `{name}`: {e}")),
    })?;
    let size = entry.size();
    crate::limits::check(
        &format!("{}: array `{name}` of {size} bytes", path.display()),
        size,
    )?;
    let mut bytes = Vec::new();
    // a member inflates to at most its declared size (plus one byte, to notice a lie)
    entry
        .take(size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(path, format!("array `{name}`: {e}")))?;
    if bytes.len() as u64 != size {
        return Err(fail(
            path,
            format!(
                "array `{name}` declares {size} bytes but inflates to {}",
                bytes.len()
            ),
        ));
    }
    parse_npy(&bytes, &path.join(member))
}

fn open_npz(path: &Path) -> Result<zip::ZipArchive<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    zip::ZipArchive::new(file)
        .map_err(|e| fail(path, format!("not a readable .npz (zip) archive: {e}")))
}

/// An `.npy` array from its bytes; `path` names it in errors.
fn parse_npy(bytes: &[u8], path: &Path) -> Result<Npy> {
    let bad = |msg: &str| fail(path, msg.to_string());
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err(bad("not a NumPy .npy file (no \\x93NUMPY magic)"));
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => {
            return Err(fail(
                path,
                format!(".npy format version {v} is not supported"),
            ));
        }
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated or unreadable header"))?;
    let descr = field(header, "descr").ok_or_else(|| bad("no `descr` in the header"))?;
    if field(header, "fortran_order") != Some("False") {
        return Err(bad(
            "only C-order arrays are read (save with fortran_order False)",
        ));
    }
    let shape_text = field(header, "shape").ok_or_else(|| bad("no `shape` in the header"))?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| fail(path, format!("shape {shape_text} is not a tuple of sizes")))?;
    let (width, kind) = match descr.trim_matches('\'') {
        "<f4" => (4, 'f'),
        "<f8" => (8, 'f'),
        "|u1" => (1, 'u'),
        "<i4" => (4, 'i'),
        "<i8" => (8, 'i'),
        other => {
            return Err(fail(
                path,
                format!("dtype {other} is not read (float32/64, uint8, int32/64, little-endian)"),
            ));
        }
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| fail(path, format!("shape {shape:?} is too large")))?;
    let data = &bytes[start + len..];
    if data.len() != count * width {
        return Err(fail(
            path,
            format!(
                "the header announces {shape:?} of {descr} = {} bytes but the file holds {}",
                count * width,
                data.len()
            ),
        ));
    }
    crate::limits::check(
        &format!("{}: an array of {shape:?}", path.display()),
        crate::limits::f32_bytes(count),
    )?;
    let values: Vec<f32> = match (kind, width) {
        ('f', 4) => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        ('f', _) => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        ('u', _) => data.iter().map(|&b| b as f32).collect(),
        (_, 4) => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        _ => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(fail(
            path,
            format!("value {i} is {} (not finite)", values[i]),
        ));
    }
    Ok(Npy {
        shape,
        values,
        bytes: kind == 'u',
    })
}
