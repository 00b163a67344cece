//! Saving and loading named tensors as safetensors files (PyTorch-compatible state dicts).
//! Files are written to a temporary name and renamed, so a crash never leaves half a file.

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
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::Io {
        path: tmp.display().to_string(),
        source: e,
    })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })
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
