//! Learning-rate schedules: constant, step, exponential, cosine with linear warm-up (per
//! step), and reduce-on-plateau (per epoch, from the monitored validation metric).

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
