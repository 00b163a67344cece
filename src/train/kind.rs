//! The kind of a run, decided once from its spec: every part of convnet that acts differently
//! for a classifier, a forecaster, an autoencoder or a GAN asks [`RunKind::of`].

use crate::spec::{DataSource, Spec, TaskKind};

/// What a spec trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// Labels from images, series or arrays (cross-entropy, accuracy); also a spec without
    /// `[data]`.
    Classifier,
    /// The next values of a series (`[data] format = "series"`).
    Forecaster,
    /// Its own input through a narrow code (`[train] task = "autoencoder"`).
    Autoencoder,
    /// A generator and a discriminator (`[train] task = "gan"`).
    Gan,
}

impl RunKind {
    pub fn of(spec: &Spec) -> RunKind {
        match spec.train.task {
            TaskKind::Gan => RunKind::Gan,
            TaskKind::Autoencoder => RunKind::Autoencoder,
            TaskKind::Supervised => match spec.data.as_ref().map(|d| &d.source) {
                Some(DataSource::Series(_)) => RunKind::Forecaster,
                _ => RunKind::Classifier,
            },
        }
    }

    /// `a classifier`, `a GAN`, ... as messages say it.
    pub fn article(&self) -> &'static str {
        match self {
            RunKind::Classifier => "a classifier",
            RunKind::Forecaster => "a forecaster",
            RunKind::Autoencoder => "an autoencoder",
            RunKind::Gan => "a GAN",
        }
    }
}
