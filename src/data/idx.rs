//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed: a big-endian header (magic with
//! the element type and rank, then one u32 per dimension) followed by the data.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Format {
                path: path.display().to_string(),
                msg: format!("corrupt gzip data: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// (dimensions, data offset) of an IDX file of unsigned bytes with `rank` dimensions.
fn header(bytes: &[u8], rank: u8, path: &Path, what: &str) -> Result<(Vec<usize>, usize)> {
    let fail = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    if bytes.len() < 4 {
        return Err(fail(format!(
            "too short for an IDX file ({} bytes)",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] != rank {
        return Err(fail(format!(
            "wrong IDX magic {:02x} {:02x} {:02x} {:02x}: expected 00 00 08 {rank:02x} ({what}: unsigned bytes, {rank} dimension(s))",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    let hlen = 4 + 4 * rank as usize;
    if bytes.len() < hlen {
        return Err(fail("truncated header".into()));
    }
    let dims: Vec<usize> = (0..rank as usize)
        .map(|i| {
            u32::from_be_bytes([
                bytes[4 + 4 * i],
                bytes[5 + 4 * i],
                bytes[6 + 4 * i],
                bytes[7 + 4 * i],
            ]) as usize
        })
        .collect();
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| fail(format!("dimensions {dims:?} overflow")))?;
    let have = bytes.len() - hlen;
    if have != need {
        return Err(fail(format!(
            "the header announces {dims:?} = {need} bytes of data but the file holds {have} (truncated or corrupt)"
        )));
    }
    Ok((dims, hlen))
}

/// Images `(n, rows, cols)` as f32 in [0, 1], and their count and size.
pub fn read_idx_images(path: &Path) -> Result<(Vec<f32>, usize, usize, usize)> {
    let bytes = read_all(path)?;
    let (d, off) = header(&bytes, 3, path, "images")?;
    Ok((
        bytes[off..].iter().map(|&b| b as f32 / 255.0).collect(),
        d[0],
        d[1],
        d[2],
    ))
}

/// Labels as class indices.
pub fn read_idx_labels(path: &Path) -> Result<Vec<usize>> {
    let bytes = read_all(path)?;
    let (_, off) = header(&bytes, 1, path, "labels")?;
    Ok(bytes[off..].iter().map(|&b| b as usize).collect())
}
