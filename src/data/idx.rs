//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed: a big-endian header (magic with
//! the element type and rank, then one u32 per dimension) followed by the data.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// The file's bytes after the `rank` dimensions of its header, read in a stream (inflated
/// when gzip-compressed) and only as far as the header announces: the dimensions are checked
/// against the file's own length and the memory budget before the data is read, so a
/// truncated file, trailing data or a decompression bomb is an error, not an allocation.
fn read_idx(path: &Path, rank: u8, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let fail = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut magic = [0u8; 2];
    let got = read_up_to(&mut file, &mut magic).map_err(io_err(path))?;
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let gz = got == 2 && magic == [0x1f, 0x8b];
    let mut stream: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(head.chain(file)))
    } else {
        Box::new(head.chain(file))
    };
    let corrupt = |e: std::io::Error| {
        if gz {
            fail(format!("corrupt gzip data: {e}"))
        } else {
            io_err(path)(e)
        }
    };
    let mut header = vec![0u8; 4 + 4 * rank as usize];
    let got = read_up_to(&mut stream, &mut header).map_err(corrupt)?;
    let (dims, need) = check_header(&header[..got], rank, what).map_err(fail)?;
    if !gz && file_len != (header.len() + need) as u64 {
        return Err(fail(format!(
            "the header announces {dims:?} = {need} bytes of data but the file holds {} (truncated or corrupt)",
            file_len.saturating_sub(header.len() as u64)
        )));
    }
    // what the caller makes of it: one f32 per byte for images
    crate::limits::check(
        &format!("{}: {what} {dims:?}", path.display()),
        (need as u64).saturating_mul(5),
    )?;
    // read as far as the header announces and one byte more, growing with what arrives: a
    // header that lies costs what the file holds, not what it claims
    let mut data = Vec::new();
    stream
        .take(need as u64 + 1)
        .read_to_end(&mut data)
        .map_err(corrupt)?;
    if data.len() != need {
        let held = if data.len() < need {
            data.len().to_string()
        } else {
            "more".to_string()
        };
        return Err(fail(format!(
            "the header announces {dims:?} = {need} bytes of data but the file holds {held} (truncated or corrupt)"
        )));
    }
    Ok((dims, data))
}

/// Fill as much of `buf` as the stream holds; the count read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The dimensions and data length an IDX header of unsigned bytes with `rank` dimensions
/// announces.
fn check_header(
    bytes: &[u8],
    rank: u8,
    what: &str,
) -> std::result::Result<(Vec<usize>, usize), String> {
    if bytes.len() < 4 {
        return Err(format!("too short for an IDX file ({} bytes)", bytes.len()));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] != rank {
        return Err(format!(
            "wrong IDX magic {:02x} {:02x} {:02x} {:02x}: expected 00 00 08 {rank:02x} ({what}: unsigned bytes, {rank} dimension(s))",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes.len() < 4 + 4 * rank as usize {
        return Err("truncated header".into());
    }
    let dims: Vec<usize> = bytes[4..]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    Ok((dims, need))
}

/// Images `(n, rows, cols)` as f32 in [0, 1], and their count and size.
pub fn read_idx_images(path: &Path) -> Result<(Vec<f32>, usize, usize, usize)> {
    let (d, bytes) = read_idx(path, 3, "images")?;
    Ok((
        bytes.iter().map(|&b| b as f32 / 255.0).collect(),
        d[0],
        d[1],
        d[2],
    ))
}

/// Labels as class indices.
pub fn read_idx_labels(path: &Path) -> Result<Vec<usize>> {
    let (_, bytes) = read_idx(path, 1, "labels")?;
    Ok(bytes.iter().map(|&b| b as usize).collect())
}
