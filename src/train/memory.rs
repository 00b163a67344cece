//! How much memory training a model takes, estimated from shapes alone (the model is built as
//! [`crate::tensor::meta`] tensors, so any size can be asked about): what `convnet summary`
//! prints and what `convnet train` checks against the memory budget before it allocates.

use crate::error::Result;
use crate::limits::{f32_bytes, fmt_bytes};
use crate::nn::Sequential;
use crate::optim::OptimizerKind;
use crate::spec::Spec;

/// Bytes a training step holds, by kind.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    pub batch: usize,
    /// The weights and buffers (batch-norm statistics).
    pub weights: u64,
    /// One gradient per weight.
    pub gradients: u64,
    /// The optimizer's per-weight state (Adam's two moments, SGD's momentum).
    pub optimizer: u64,
    /// A batch's activations kept for backward and their gradients.
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.gradients)
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
    }

    /// `about 1.2 GiB at batch 64 (weights 4.0 MiB, gradients 4.0 MiB, ...)`.
    pub fn describe(&self) -> String {
        format!("about {} {}", fmt_bytes(self.total()), self.breakdown())
    }

    /// `at batch 64 (weights 4.0 MiB, gradients 4.0 MiB, ...)`.
    pub fn breakdown(&self) -> String {
        format!(
            "at batch {} (weights {}, gradients {}, optimizer state {}, activations {})",
            self.batch,
            fmt_bytes(self.weights),
            fmt_bytes(self.gradients),
            fmt_bytes(self.optimizer),
            fmt_bytes(self.activations)
        )
    }
}

/// Per-weight slots the optimizer keeps.
fn slots(kind: &OptimizerKind) -> u64 {
    match kind {
        OptimizerKind::Sgd { momentum, .. } => u64::from(*momentum > 0.0),
        OptimizerKind::Adam { .. } | OptimizerKind::AdamW { .. } => 2,
        OptimizerKind::RmsProp { .. } => 2,
    }
}

/// The estimate for training `model` at `batch` with `optimizer`: every layer's output (those
/// inside blocks too) is kept for backward and gets a gradient of the same size.
pub fn estimate(
    model: &Sequential,
    batch: usize,
    optimizer: &OptimizerKind,
) -> Result<MemoryEstimate> {
    let count = |v: &[(String, crate::Tensor)]| -> u64 {
        v.iter()
            .map(|(_, t)| f32_bytes(t.numel()))
            .fold(0, u64::saturating_add)
    };
    let params = count(&model.named_params());
    let per_sample = model
        .report()?
        .iter()
        .map(|r| crate::nn::count(&r.output_shape).saturating_mul(4))
        .fold(
            crate::nn::count(&model.input).saturating_mul(4),
            u64::saturating_add,
        );
    Ok(MemoryEstimate {
        batch,
        weights: count(&model.state_dict()),
        gradients: params,
        optimizer: params.saturating_mul(slots(optimizer)),
        activations: per_sample.saturating_mul(2).saturating_mul(batch as u64),
    })
}

/// The estimate for the training `spec` describes (a GAN's two models together), from shapes.
pub fn estimate_spec(spec: &Spec) -> Result<MemoryEstimate> {
    let t = &spec.train;
    crate::tensor::meta(|| {
        let mut rng = crate::Rng::new(0);
        let mut e = estimate(&spec.build_model(&mut rng)?, t.batch_size, &t.optimizer)?;
        if let Some(d) = spec.build_discriminator(&mut rng)? {
            let d = estimate(&d, t.batch_size, &t.optimizer)?;
            e.weights = e.weights.saturating_add(d.weights);
            e.gradients = e.gradients.saturating_add(d.gradients);
            e.optimizer = e.optimizer.saturating_add(d.optimizer);
            e.activations = e.activations.saturating_add(d.activations);
        }
        Ok(e)
    })
}

/// Refuse, before anything is allocated, a training that would not fit the memory budget.
pub fn check_fits(spec: &Spec) -> Result<MemoryEstimate> {
    let e = estimate_spec(spec)?;
    crate::limits::check(
        &format!("{}: training this model", spec.path.display()),
        e.total(),
    )
    .map_err(|err| match err {
        crate::Error::TooLarge { what, msg } => crate::Error::TooLarge {
            what,
            msg: format!("{msg}; {}", e.breakdown()),
        },
        other => other,
    })?;
    Ok(e)
}
