//! PyTorch's names for a model's weights: those of the `nn.Sequential` a spec corresponds to,
//! as `tools/make_torch_fixtures.py` builds it. A layer is one module, except where PyTorch
//! needs more: a convolution padded unevenly (`causal`, `same` with an even kernel or a
//! stride) is preceded by a padding module (`nn.ConstantPad1d`/`2d`, or the reflection,
//! replication and circular ones); a transposed convolution cropped to `same` is followed by
//! a crop; an activation written inside a convolution or dense layer (Keras-style) is a module
//! of its own after it. The numbering of the modules after such a layer shifts accordingly.
//! Blocks (`residual`, `tcn`, `wavenet`) are one module each, holding their sub-layers under the
//! names convnet gives them (`body.0`, `blocks.2.conv1`, `layers.3.gated`), a residual body
//! numbered by the same rule.

use super::Layer;
use crate::error::Result;

/// PyTorch modules a layer becomes before and after the one that holds its weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TorchSpan {
    pub before: usize,
    pub after: usize,
}

/// `(convnet name, PyTorch name)` for every tensor of the state dict of the chain `layers`
/// applied to a per-sample `input`, convnet's names below `ours.`, PyTorch's below `theirs`.
pub(crate) fn chain_names(
    layers: &[&dyn Layer],
    input: &[usize],
    (ours, theirs): (&str, &str),
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut shape = input.to_vec();
    let mut module = 0;
    for (i, layer) in layers.iter().enumerate() {
        let span = layer.torch_span(&shape)?;
        let at = module + span.before;
        for (local, torch) in layer.torch_local(&shape)? {
            out.push((
                format!("{ours}{i}.{local}"),
                format!("{theirs}{at}.{torch}"),
            ));
        }
        module = at + 1 + span.after;
        shape = layer.infer(&shape)?.output;
    }
    Ok(out)
}
