//! Saving and loading named tensors as safetensors files (PyTorch-compatible state dicts),
//! and [`write_atomic`], through which every file convnet writes goes: a crash or a full disk
//! leaves the previous version of a file, never half of a new one.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Write `tensors` (f32) and string `metadata` to `path`.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::Format {
            path: path.display().to_string(),
            msg: format!("tensor `{}` named twice", w[0].0),
        });
    }
    let mut meta = metadata.clone();
    meta.remove(CHECKSUM);
    let datas: Vec<(&str, &[usize], Vec<u8>)> = sorted
        .iter()
        .map(|(n, t)| {
            let bytes = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.as_str(), t.shape(), bytes)
        })
        .collect();
    let sum = checksum(datas.iter().map(|(n, s, d)| (*n, *s, d.as_slice())), &meta);
    meta.insert(CHECKSUM.into(), sum);
    write_atomic(path, &serialize(&datas, &meta))
}

/// The safetensors layout, written so that the same tensors and metadata give the same bytes
/// (keys in order): an 8-byte little-endian header length, the JSON header padded with spaces
/// to a multiple of 8, then the tensors' bytes in header order.
fn serialize(datas: &[(&str, &[usize], Vec<u8>)], meta: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !meta.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(meta));
    }
    let mut offset = 0;
    for (name, shape, bytes) in datas {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + offset);
    out.extend((head.len() as u64).to_le_bytes());
    out.extend(head);
    for (_, _, bytes) in datas {
        out.extend(bytes);
    }
    out
}

/// The metadata key of the checksum [`save`] writes and [`load`] checks.
pub const CHECKSUM: &str = "convnet.crc32";

/// CRC-32 of every tensor (name, shape, little-endian values; in name order) and every
/// metadata entry but the checksum itself, as 8 hex digits.
fn checksum<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [u8])>,
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by_key(|t| t.0);
    let mut crc = flate2::Crc::new();
    for (name, shape, bytes) in sorted {
        crc.update(name.as_bytes());
        crc.update(&[0]);
        for d in shape {
            crc.update(&(*d as u64).to_le_bytes());
        }
        crc.update(bytes);
    }
    for (k, v) in metadata.iter().filter(|(k, _)| *k != CHECKSUM) {
        crc.update(k.as_bytes());
        crc.update(&[0]);
        crc.update(v.as_bytes());
        crc.update(&[0]);
    }
    format!("{:08x}", crc.sum())
}

/// Write `bytes` to `path` through `path.tmp` in the same folder: written, flushed to disk,
/// then renamed over `path`. On any failure the temporary file is removed and the error
/// names the file; `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| Error::Io { path: p, source: e }
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the folder {} does not exist", dir.display()),
            ),
        });
    }
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            crash_point(path, &mut f, bytes);
            f.write_all(bytes).and_then(|_| f.sync_all())
        })
        .map_err(io(&tmp))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(io(path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Fault injection for the crash-safety tests: with `CONVNET_CRASH_IN_WRITE=NAME:N`, the
/// process aborts (as a kill would) in the middle of its `N`-th write of a file called
/// `NAME`, half of the new content written to the temporary file.
fn crash_point(path: &Path, f: &mut std::fs::File, bytes: &[u8]) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let Ok(spec) = std::env::var("CONVNET_CRASH_IN_WRITE") else {
        return;
    };
    let Some((name, n)) = spec.rsplit_once(':') else {
        return;
    };
    if path.file_name().is_some_and(|f| f == name)
        && n.parse::<usize>().ok() == Some(WRITES.fetch_add(1, Ordering::SeqCst) + 1)
    {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        let _ = f.sync_all();
        std::process::abort();
    }
}

/// Read every tensor (f32 only) and the metadata of a safetensors file. A file convnet wrote
/// carries a checksum, checked here: a file damaged since is an error that says so. Values
/// must be finite (a NaN weight is damage too).
pub fn load(path: &Path) -> Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)> {
    // the tensors take as much again as the file
    load_bytes(&crate::limits::read_file(path, 2)?, path)
}

/// [`load`] on a file's `bytes` read already (`path` names it in errors).
pub fn load_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)> {
    let fmt = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        fmt(format!(
            "not a valid safetensors file (truncated or corrupt): {e}"
        ))
    })?;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        fmt(format!(
            "not a valid safetensors file (truncated or corrupt): {e}"
        ))
    })?;
    let views = st.tensors();
    if let Some(want) = metadata.get(CHECKSUM) {
        let got = checksum(
            views.iter().map(|(n, v)| (n.as_str(), v.shape(), v.data())),
            &metadata,
        );
        if &got != want {
            return Err(fmt(format!(
                "damaged: its checksum is {got} but it was written with {want} (changed on disk since convnet wrote it)"
            )));
        }
    }
    let mut out = BTreeMap::new();
    for (name, view) in views {
        if view.dtype() != Dtype::F32 {
            return Err(fmt(format!(
                "tensor `{name}` is {:?}; only F32 is supported",
                view.dtype()
            )));
        }
        out.insert(name.to_string(), to_tensor(&name, &view, path)?);
    }
    Ok((out, metadata))
}

/// A view's values as an f32 tensor (F32, or F64, F16 and BF16 converted); values must be
/// finite.
fn to_tensor(name: &str, view: &safetensors::tensor::TensorView, path: &Path) -> Result<Tensor> {
    let b = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(Error::Format {
                path: path.display().to_string(),
                msg: format!("tensor `{name}` is {other:?}, not floating point"),
            });
        }
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::Format {
            path: path.display().to_string(),
            msg: format!(
                "tensor `{name}` holds {} at index {i}: the weights are damaged",
                data[i]
            ),
        });
    }
    Tensor::from_vec(data, view.shape())
}

/// An IEEE half-precision value as f32 (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        // subnormal: frac * 2^-24
        (0, f) => {
            let v = f as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// The tensors of a safetensors file another tool wrote (a PyTorch state dict): the
/// floating-point ones as f32 (F16, BF16 and F64 converted), and apart, the names and dtypes
/// of the others (integers, such as batch norm's `num_batches_tracked`).
pub fn load_foreign(path: &Path) -> Result<ForeignTensors> {
    // the tensors take as much again as the file
    let bytes = crate::limits::read_file(path, 2)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Format {
        path: path.display().to_string(),
        msg: format!("not a valid safetensors file (truncated or corrupt): {e}"),
    })?;
    let mut out = ForeignTensors::default();
    for (name, view) in st.tensors() {
        match view.dtype() {
            Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16 => {
                if view.dtype() != Dtype::F32 {
                    out.converted.push(format!("{name} ({:?})", view.dtype()));
                }
                out.floats
                    .insert(name.clone(), to_tensor(&name, &view, path)?);
            }
            other => out.others.push((name, format!("{other:?}"))),
        }
    }
    out.converted.sort();
    out.others.sort();
    Ok(out)
}

/// What [`load_foreign`] reads.
#[derive(Default)]
pub struct ForeignTensors {
    pub floats: BTreeMap<String, Tensor>,
    /// Floating-point tensors converted to f32, as `name (F16)`.
    pub converted: Vec<String>,
    /// Tensors of other dtypes, with their dtype.
    pub others: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_converts_exactly() {
        for (h, v) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0x8001, -5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(h), v, "{h:#x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn write_atomic_replaces_whole_files_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        // the rename fails (a folder stands at the path): the error names it, no .tmp stays
        let blocked = dir.path().join("metrics.csv");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        let e = write_atomic(&blocked, b"rows").unwrap_err().to_string();
        assert!(e.contains("metrics.csv"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn a_full_disk_names_the_file_and_leaves_the_previous_version() {
        // the temporary file is /dev/full, where every write fails with ENOSPC
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        write_atomic(&p, b"previous").unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("run.json.tmp")).unwrap();
        let e = write_atomic(&p, b"next").unwrap_err();
        let Error::Io { path, source } = &e else {
            panic!("{e}")
        };
        assert!(path.ends_with("run.json.tmp"), "{e}");
        assert_eq!(source.raw_os_error(), Some(28), "ENOSPC: {e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"previous");
        assert!(!dir.path().join("run.json.tmp").exists());
    }
}
