//! Learning-rate schedules: constant, step, exponential, cosine with linear warm-up (per
//! step), reduce-on-plateau (per epoch, from the monitored validation metric), and the
//! one-cycle policy (per step, with momentum cycled against the learning rate, as PyTorch's
//! `OneCycleLR`).

/// A schedule and its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step {
        step_size: usize,
        gamma: f32,
    },
    /// Multiply by `gamma` every epoch.
    Exponential {
        gamma: f32,
    },
    /// Linear warm-up from 0 over `warmup_epochs`, then cosine decay to `min_lr` at the end.
    Cosine {
        warmup_epochs: f32,
        min_lr: f32,
    },
    /// Multiply by `factor` when the monitored metric has not improved for `patience` epochs.
    Plateau {
        factor: f32,
        patience: usize,
        min_lr: f32,
    },
    /// PyTorch's `OneCycleLR` with cosine annealing, stepped per batch.
    OneCycle(OneCycle),
}

/// The one-cycle policy (Smith and Topin, 2019) as PyTorch's `OneCycleLR` with
/// `anneal_strategy="cos"`: from `max_lr / div_factor` up to `max_lr` over the first
/// `pct_start` of the steps, then down to `max_lr / div_factor / final_div_factor` (with
/// `three_phase`: back to the start first, then down); the momentum (SGD's and RMSprop's
/// `momentum`, Adam's `beta1`) the other way, between `max_momentum` and `base_momentum`.
#[derive(Clone, Debug, PartialEq)]
pub struct OneCycle {
    /// The peak learning rate (`None`: the optimizer's `lr`).
    pub max_lr: Option<f32>,
    pub pct_start: f32,
    pub div_factor: f32,
    pub final_div_factor: f32,
    pub three_phase: bool,
    /// `(base_momentum, max_momentum)`; `None`: the momentum is not cycled.
    pub momentum: Option<(f32, f32)>,
}

impl Default for OneCycle {
    /// PyTorch's defaults.
    fn default() -> Self {
        OneCycle {
            max_lr: None,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            momentum: Some((0.85, 0.95)),
        }
    }
}

impl OneCycle {
    /// `(learning rate, momentum)` at global step `step` (0-based) of `total`, the optimizer's
    /// `lr` being `base`; PyTorch's phases and `_annealing_cos` in f64.
    pub fn at(&self, base: f32, step: usize, total: usize) -> (f32, Option<f32>) {
        let max = self.max_lr.unwrap_or(base) as f64;
        let initial = max / self.div_factor as f64;
        let min = initial / self.final_div_factor as f64;
        let (lo, hi) = self
            .momentum
            .map_or((0.0, 0.0), |(b, m)| (b as f64, m as f64));
        let (total, pct) = (total.max(1) as f64, self.pct_start as f64);
        // (end step, lr from, lr to, momentum from, momentum to)
        let phases: Vec<(f64, f64, f64, f64, f64)> = if self.three_phase {
            vec![
                (pct * total - 1.0, initial, max, hi, lo),
                (2.0 * pct * total - 2.0, max, initial, lo, hi),
                (total - 1.0, initial, min, hi, hi),
            ]
        } else {
            vec![
                (pct * total - 1.0, initial, max, hi, lo),
                (total - 1.0, max, min, lo, hi),
            ]
        };
        let cos = |from: f64, to: f64, p: f64| {
            to + (from - to) / 2.0 * ((std::f64::consts::PI * p).cos() + 1.0)
        };
        let s = step as f64;
        let mut start = 0.0;
        for (i, &(end, l0, l1, m0, m1)) in phases.iter().enumerate() {
            if s <= end || i == phases.len() - 1 {
                let p = (s - start) / (end - start);
                let m = self.momentum.map(|_| cos(m0, m1, p) as f32);
                return (cos(l0, l1, p) as f32, m);
            }
            start = end;
        }
        (min as f32, None)
    }
}

/// What a schedule remembers across epochs (reduce-on-plateau only).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScheduleState {
    pub scale: f32,
    pub best: Option<f32>,
    pub bad_epochs: usize,
}

impl Schedule {
    /// The learning rate at `step` of `steps_per_epoch` within `epoch` (0-based) of `epochs`.
    pub fn lr(
        &self,
        base: f32,
        state: &ScheduleState,
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        epochs: usize,
    ) -> f32 {
        let spe = steps_per_epoch.max(1) as f32;
        match *self {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(1)) as i32)
            }
            Schedule::Exponential { gamma } => base * gamma.powi(epoch as i32),
            Schedule::Cosine {
                warmup_epochs,
                min_lr,
            } => {
                let t = epoch as f32 + step as f32 / spe;
                let total = epochs as f32;
                if t < warmup_epochs {
                    base * (t + 1.0 / spe) / warmup_epochs
                } else {
                    let p =
                        ((t - warmup_epochs) / (total - warmup_epochs).max(1e-6)).clamp(0.0, 1.0);
                    min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f32::consts::PI * p).cos())
                }
            }
            Schedule::Plateau { min_lr, .. } => {
                (base * if state.scale > 0.0 { state.scale } else { 1.0 }).max(min_lr)
            }
            Schedule::OneCycle(ref c) => {
                let spe = steps_per_epoch.max(1);
                c.at(base, epoch * spe + step, epochs * spe).0
            }
        }
    }

    /// The momentum the schedule sets at that step (the one-cycle policy's), if any.
    pub fn momentum(
        &self,
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        epochs: usize,
    ) -> Option<f32> {
        match self {
            Schedule::OneCycle(c) => {
                let spe = steps_per_epoch.max(1);
                c.at(1.0, epoch * spe + step, epochs * spe).1
            }
            _ => None,
        }
    }

    /// Update the state after an epoch whose monitored value was `metric` (lower is better
    /// when `minimize`).
    pub fn end_epoch(&self, state: &mut ScheduleState, metric: f32, minimize: bool) {
        if let Schedule::Plateau {
            factor, patience, ..
        } = *self
        {
            if state.scale == 0.0 {
                state.scale = 1.0;
            }
            let better = match state.best {
                None => true,
                Some(b) => {
                    if minimize {
                        metric < b
                    } else {
                        metric > b
                    }
                }
            };
            if better {
                state.best = Some(metric);
                state.bad_epochs = 0;
            } else {
                state.bad_epochs += 1;
                if state.bad_epochs > patience {
                    state.scale *= factor;
                    state.bad_epochs = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_their_formulas() {
        let s = ScheduleState::default();
        assert_eq!(
            Schedule::Step {
                step_size: 2,
                gamma: 0.5
            }
            .lr(1.0, &s, 3, 0, 10, 10),
            0.5
        );
        assert!(
            (Schedule::Exponential { gamma: 0.9 }.lr(1.0, &s, 2, 0, 10, 10) - 0.81).abs() < 1e-6
        );
        let c = Schedule::Cosine {
            warmup_epochs: 1.0,
            min_lr: 0.0,
        };
        assert!(
            (c.lr(1.0, &s, 0, 4, 10, 5) - 0.5).abs() < 1e-6,
            "half-way through warm-up"
        );
        assert!(
            (c.lr(1.0, &s, 1, 0, 10, 5) - 1.0).abs() < 1e-6,
            "peak after warm-up"
        );
        assert!(
            (c.lr(1.0, &s, 3, 0, 10, 5) - 0.5).abs() < 1e-6,
            "half-way through the decay"
        );
        assert!(c.lr(1.0, &s, 4, 9, 10, 5) < 0.03);
    }

    #[test]
    fn plateau_reduces_after_patience_epochs_without_improvement() {
        let p = Schedule::Plateau {
            factor: 0.1,
            patience: 1,
            min_lr: 0.0,
        };
        let mut st = ScheduleState::default();
        for m in [1.0, 0.9, 0.95, 0.95] {
            p.end_epoch(&mut st, m, true);
        }
        assert!((p.lr(1.0, &st, 0, 0, 1, 1) - 0.1).abs() < 1e-6);
    }
}
