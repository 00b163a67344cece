//! Saving and loading named tensors as safetensors files (PyTorch-compatible state dicts),
//! and [`write_atomic`], through which every file convnet writes goes: a crash or a full disk
//! leaves the previous version of a file, never half of a new one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Write `tensors` (f32) and string `metadata` to `path`.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let datas: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.shape().to_vec(),
                t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let fmt = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let views: Vec<(String, TensorView)> = datas
        .iter()
        .map(|(n, s, d)| {
            TensorView::new(Dtype::F32, s.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| fmt(e.to_string()))
        })
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| fmt(e.to_string()))?;
    write_atomic(path, &bytes)
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
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .map_err(io(&tmp))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(io(path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Read every tensor (f32 only) and the metadata of a safetensors file.
pub fn load(path: &Path) -> Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let fmt = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
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
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        fmt(format!(
            "not a valid safetensors file (truncated or corrupt): {e}"
        ))
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(fmt(format!(
                "tensor `{name}` is {:?}; only F32 is supported",
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(name.to_string(), Tensor::from_vec(data, view.shape())?);
    }
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
