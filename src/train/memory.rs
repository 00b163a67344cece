//! How much memory training a model takes, estimated from shapes alone (the model is built as
//! [`crate::tensor::meta`] tensors, so any size can be asked about): what `convnet summary`
//! prints and what `convnet train` checks against the memory budget before it allocates.

use crate::error::Result;
use crate::limits::{f32_bytes, fmt_bytes};
use crate::nn::Sequential;
use crate::optim::OptimizerKind;
use crate::spec::Spec;

/// What runs a training's steps, as `convnet train` chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The compiled plan ([`crate::plan::TrainPlan`]).
    Plan,
    /// The eager engine with its autograd graph.
    Eager,
}

/// Bytes a training step holds, by kind.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    pub batch: usize,
    pub engine: Engine,
    /// The weights and buffers (batch-norm statistics), and the plan's prepared (packed)
    /// copies of them.
    pub weights: u64,
    /// One gradient per weight (and the plan's own gradient buffers).
    pub gradients: u64,
    /// The optimizer's per-weight state (Adam's two moments, SGD's momentum).
    pub optimizer: u64,
    /// A batch's activations kept for backward.
    pub activations: u64,
    /// What backward works in beyond them: the gradients of activations being passed back,
    /// dropout masks, a convolution's padded input and widened output gradient.
    pub working: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.gradients)
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
            .saturating_add(self.working)
    }

    /// What grows with the batch (activations and backward's working memory), per sample.
    pub fn per_sample(&self) -> u64 {
        self.activations.saturating_add(self.working) / self.batch.max(1) as u64
    }

    /// What does not grow with the batch: weights, gradients, optimizer state.
    pub fn fixed(&self) -> u64 {
        self.weights
            .saturating_add(self.gradients)
            .saturating_add(self.optimizer)
    }

    /// `about 56 MiB at batch 64 on the compiled plan: 6.1 MiB for the model and 782 KiB per
    /// sample (weights 1.6 MiB, ...)`.
    pub fn describe(&self) -> String {
        format!("about {} {}", fmt_bytes(self.total()), self.breakdown())
    }

    /// The same without the total.
    pub fn breakdown(&self) -> String {
        format!(
            "at batch {} {}: {} for the model and {} per sample (weights {}, gradients {}, \
             optimizer state {}, activations {}, backward's working memory {})",
            self.batch,
            match self.engine {
                Engine::Plan => "on the compiled plan",
                Engine::Eager => "eagerly",
            },
            fmt_bytes(self.fixed()),
            fmt_bytes(self.per_sample()),
            fmt_bytes(self.weights),
            fmt_bytes(self.gradients),
            fmt_bytes(self.optimizer),
            fmt_bytes(self.activations),
            fmt_bytes(self.working)
        )
    }

    /// As JSON numbers (bytes).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "batch": self.batch,
            "engine": match self.engine { Engine::Plan => "plan", Engine::Eager => "eager" },
            "total_bytes": self.total(),
            "per_sample_bytes": self.per_sample(),
            "model_bytes": self.fixed(),
            "weights_bytes": self.weights,
            "gradients_bytes": self.gradients,
            "optimizer_bytes": self.optimizer,
            "activations_bytes": self.activations,
            "working_bytes": self.working,
        })
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

/// The estimate for training `model` at `batch` with `optimizer`, on the engine `convnet
/// train` chooses for it (the compiled plan where it compiles the model, unless
/// `CONVNET_EAGER` is set).
///
/// On the plan, the plan's own buffers, sized from its steps ([`crate::plan::train_footprint`]).
/// Eagerly, what every layer keeps for backward (inside blocks too, [`crate::nn::Layer::kept`]),
/// and the most backward holds beside what is still kept when it reaches a layer: the
/// gradients of the layer's output and input, and for a convolution a copy of its padded input
/// and of its output gradient.
pub fn estimate(
    model: &Sequential,
    batch: usize,
    optimizer: &OptimizerKind,
) -> Result<MemoryEstimate> {
    use crate::nn::count;
    let sum = |v: &[(String, crate::Tensor)]| -> u64 {
        v.iter()
            .map(|(_, t)| f32_bytes(t.numel()))
            .fold(0, u64::saturating_add)
    };
    let params = sum(&model.named_params());
    let weights = sum(&model.state_dict());
    let optimizer = params.saturating_mul(slots(optimizer));
    let bytes = |values: u64| values.saturating_mul(4);
    let plan = match std::env::var_os("CONVNET_EAGER") {
        Some(_) => None,
        None => crate::plan::train_footprint(model, &model.input, batch).ok(),
    };
    if let Some(f) = plan {
        return Ok(MemoryEstimate {
            batch,
            engine: Engine::Plan,
            weights: weights.saturating_add(bytes(f.prepared_weights)),
            gradients: params.saturating_add(bytes(f.gradient_buffers)),
            optimizer,
            activations: bytes(f.activations),
            working: bytes(f.working),
        });
    }
    // backward meets the layers last to first: at layer k, the activations of the layers up
    // to k are still kept, beside the gradients of k's output and input (and a
    // convolution's scratch)
    let rows = model.report()?;
    let (mut kept, mut peak) = (count(&model.input), 0u64);
    for r in &rows {
        kept = kept.saturating_add(r.kept);
        let (inp, out) = (count(&r.input_shape), count(&r.output_shape));
        let scratch = if r.kind.starts_with("conv") {
            inp.saturating_add(out)
        } else {
            0
        };
        peak = peak.max(
            kept.saturating_add(inp)
                .saturating_add(out)
                .saturating_add(scratch),
        );
    }
    let per_batch = |values: u64| bytes(values).saturating_mul(batch as u64);
    Ok(MemoryEstimate {
        batch,
        engine: Engine::Eager,
        weights,
        gradients: params,
        optimizer,
        activations: per_batch(kept),
        working: per_batch(peak.saturating_sub(kept)),
    })
}

/// The estimate for the training `spec` describes (a GAN's two models together), from shapes.
pub fn estimate_spec(spec: &Spec) -> Result<MemoryEstimate> {
    let t = &spec.train;
    crate::tensor::meta(|| {
        let mut rng = crate::Rng::new(0);
        let model = spec.build_model(&mut rng)?;
        let mut e = estimate(&model, t.batch_size, &t.optimizer)?;
        if t.ema.is_some() {
            // the moving average: a second copy of every parameter and buffer
            let copy: u64 = model
                .state_dict()
                .iter()
                .map(|(_, t)| f32_bytes(t.numel()))
                .fold(0, u64::saturating_add);
            e.weights = e.weights.saturating_add(copy);
        }
        if let Some(d) = spec.build_discriminator(&mut rng)? {
            let d = estimate(&d, t.batch_size, &t.optimizer)?;
            e.weights = e.weights.saturating_add(d.weights);
            e.gradients = e.gradients.saturating_add(d.gradients);
            e.optimizer = e.optimizer.saturating_add(d.optimizer);
            e.activations = e.activations.saturating_add(d.activations);
            e.working = e.working.max(d.working);
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
