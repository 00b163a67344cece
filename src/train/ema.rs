//! An exponential moving average of the weights (`[train] ema = { decay = 0.999 }`), as
//! PyTorch's `AveragedModel` with an EMA average and `use_buffers=True`: after every optimizer
//! step each parameter and buffer (batch norm's running statistics too) becomes
//! `decay * average + (1 - decay) * current`, the first step copying. The average is a model
//! of its own: validation evaluates it, `ema.safetensors` holds it, `best.safetensors` is its
//! best epoch; a checkpoint keeps it (`ema.` names) so that a resumed run continues it.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::nn::Sequential;
use crate::rng::Rng;
use crate::spec::Spec;
use crate::tensor::Tensor;

/// The averaged model and how many updates it has seen.
pub struct Ema {
    pub decay: f32,
    pub model: Sequential,
    pub updates: u64,
}

/// The prefix of the average's tensors in a checkpoint.
pub const PREFIX: &str = "ema.";

impl Ema {
    /// An average of the model `spec` builds, with no update yet.
    pub fn new(spec: &Spec, decay: f32) -> Result<Ema> {
        Ok(Ema {
            decay,
            model: spec.build_model(&mut Rng::new(0))?,
            updates: 0,
        })
    }

    /// Fold a model's parameters and buffers (its `state_dict()`, in order) into the average.
    pub fn update(&mut self, current: &[(String, Tensor)]) {
        let (d, first) = (self.decay, self.updates == 0);
        for ((_, avg), (_, cur)) in self.model.state_dict().iter().zip(current) {
            let c = cur.data();
            let mut a = avg.data_mut();
            if first {
                a.copy_from_slice(&c);
            } else {
                for (a, &c) in a.iter_mut().zip(c.iter()) {
                    *a = d * *a + (1.0 - d) * c;
                }
            }
        }
        self.updates += 1;
    }

    /// The average's tensors under [`PREFIX`], for a checkpoint.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.model
            .state_dict()
            .into_iter()
            .map(|(n, t)| (format!("{PREFIX}{n}"), t))
            .collect()
    }

    /// Restore the average from a checkpoint's [`PREFIX`] tensors after `updates` updates.
    pub fn load(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        updates: u64,
        source: &str,
    ) -> Result<()> {
        let own: BTreeMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|n| (n.to_string(), v.clone())))
            .collect();
        self.model.load_state_dict(&own, source)?;
        self.updates = updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_update_copies_then_each_mixes_by_the_decay() {
        let text = "[model]\ninput = [3]\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n";
        let spec = Spec::parse(text, std::path::Path::new("m.toml")).unwrap();
        let m = spec.build_model(&mut Rng::new(5)).unwrap();
        let mut ema = Ema::new(&spec, 0.9).unwrap();
        ema.update(&m.state_dict());
        let w0 = m.state_dict()[0].1.to_vec();
        assert_eq!(ema.model.state_dict()[0].1.to_vec(), w0);
        // the weights move; the average moves a tenth of the way
        for (_, t) in m.state_dict() {
            t.data_mut().iter_mut().for_each(|v| *v += 1.0);
        }
        ema.update(&m.state_dict());
        let got = ema.model.state_dict()[0].1.to_vec();
        for (g, w) in got.iter().zip(&w0) {
            assert!((g - (0.9 * w + 0.1 * (w + 1.0))).abs() < 1e-6);
        }
        assert_eq!(ema.updates, 2);
    }
}
