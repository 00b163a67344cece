//! PyTorch state dicts saved with safetensors, in both directions, under the names PyTorch
//! gives the `nn.Sequential` a spec corresponds to ([`crate::nn::Sequential::torch_names`]).
//!
//! Reading: floating-point tensors of any precision (F16, BF16 and F64 are converted to f32);
//! integer tensors named `num_batches_tracked` (batch norm's step counter, which convnet does
//! not use) are left out; a prefix common to every name (`model.` of a wrapped `nn.Sequential`)
//! is taken off; a file with convnet's own names loads as it is. Every missing, unexpected or
//! wrongly shaped tensor is reported at once, each with its name and shapes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::tensor::Tensor;

/// A PyTorch state dict read for a model.
#[derive(Debug)]
pub struct TorchImport {
    /// The weights under convnet's names, ready for [`Sequential::load_state_dict`].
    pub state: BTreeMap<String, Tensor>,
    /// The prefix taken off every name (`model.`), or empty.
    pub prefix: String,
    /// Tensors left out (`num_batches_tracked`).
    pub ignored: Vec<String>,
    /// Tensors converted to f32, as `name (F16)`.
    pub converted: Vec<String>,
    /// Whether the file had convnet's own names.
    pub native: bool,
}

/// The part of `name` before its first numeric segment (`model.` of `model.0.weight`).
fn head(name: &str) -> Option<String> {
    let segs: Vec<&str> = name.split('.').collect();
    let at = segs.iter().position(|s| s.parse::<usize>().is_ok())?;
    Some(segs[..at].iter().map(|s| format!("{s}.")).collect())
}

/// Read the PyTorch state dict at `path` for `model`.
pub fn load_torch(model: &Sequential, path: &Path) -> Result<TorchImport> {
    let file = crate::io::load_foreign(path)?;
    let mut problems = Vec::new();
    let mut ignored = Vec::new();
    for (name, dtype) in &file.others {
        if name.ends_with("num_batches_tracked") {
            ignored.push(name.clone());
        } else {
            problems.push(format!("`{name}` is {dtype}, not floating point"));
        }
    }
    let own: BTreeMap<String, Vec<usize>> = model
        .state_dict()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    let fits = |name: &str, shape: &[usize]| own.get(name).is_some_and(|s| s == shape);
    let native = problems.is_empty()
        && file.floats.len() == own.len()
        && file.floats.iter().all(|(n, t)| fits(n, t.shape()));
    if native {
        return Ok(TorchImport {
            state: file.floats,
            prefix: String::new(),
            ignored,
            converted: file.converted,
            native,
        });
    }
    let heads: Vec<Option<String>> = file.floats.keys().map(|n| head(n)).collect();
    let prefix = match heads.first() {
        Some(Some(h)) if heads.iter().all(|x| x.as_ref() == Some(h)) => h.clone(),
        _ => String::new(),
    };
    let mut state = BTreeMap::new();
    let mut used = std::collections::BTreeSet::new();
    for (ours, theirs) in model.torch_names()? {
        let name = format!("{prefix}{theirs}");
        let want = &own[&ours];
        match file.floats.get(&name) {
            None => problems.push(format!(
                "missing `{name}` of shape {want:?} (convnet's `{ours}`)"
            )),
            Some(t) if t.shape() != want.as_slice() => problems.push(format!(
                "`{name}` has shape {:?}, the model's `{ours}` needs {want:?}",
                t.shape()
            )),
            Some(t) => {
                state.insert(ours, t.clone());
            }
        }
        used.insert(name);
    }
    for (name, t) in &file.floats {
        if !used.contains(name) {
            problems.push(format!(
                "unexpected `{name}` of shape {:?}: the model has no such tensor",
                t.shape()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Format {
            path: path.display().to_string(),
            msg: format!(
                "does not fit the model as PyTorch names the equivalent nn.Sequential{} ({} problem{}):\n  {}",
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!(" below `{prefix}`")
                },
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("\n  ")
            ),
        });
    }
    Ok(TorchImport {
        state,
        prefix,
        ignored,
        converted: file.converted,
        native,
    })
}

/// The model's weights under PyTorch's names, for `load_state_dict(strict=True)` of the
/// equivalent `nn.Sequential` (batch norm's `num_batches_tracked`, absent, is set to 0 there).
pub fn torch_state(model: &Sequential) -> Result<Vec<(String, Tensor)>> {
    let own: BTreeMap<String, Tensor> = model.state_dict().into_iter().collect();
    model
        .torch_names()?
        .into_iter()
        .map(|(ours, theirs)| {
            own.get(&ours)
                .map(|t| (theirs, t.clone()))
                .ok_or_else(|| Error::Format {
                    path: ours.clone(),
                    msg: "a weight the state dict does not hold".into(),
                })
        })
        .collect()
}

/// Write the model's weights as a PyTorch state dict (safetensors) at `path`.
pub fn save_torch(model: &Sequential, path: &Path) -> Result<()> {
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    crate::io::save(path, &torch_state(model)?, &meta)
}
