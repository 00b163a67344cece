//! Data-parallel training: the processes ("ranks") a run trains on and what they say to each
//! other. A run on one process has [`Solo`]; `mpirun -np N convnet train` (built with
//! `--features mpi`) has the N ranks of an MPI job ([`mpi::Mpi`]).
//!
//! Each rank takes its part of every batch ([`crate::data::part_of`]), computes the gradients
//! of its part, and the ranks sum them ([`Collective::all_reduce_sum`], weighted by the
//! samples of each part, so the sum is the gradient of the whole batch); every rank then
//! applies the same update to the same weights. Sums run in a fixed order (a ring whose
//! order does not depend on timing), so every rank holds the same bits and a run gives the
//! same weights each time it is repeated with as many ranks.

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use std::sync::Arc;

/// The ranks of a run, as one rank sees them.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size()`; rank 0 writes the run directory.
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Sum `buf` element-wise over the ranks, in place; every rank ends with the same bits.
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// [`Self::all_reduce_sum`] on f64 values (losses, counts).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Give every rank rank 0's `bytes`.
    fn broadcast(&self, bytes: &mut Vec<u8>);
    /// Where this rank runs (host name), for messages.
    fn host(&self) -> String {
        String::new()
    }
    /// The same ranks on a channel of their own, whose calls may run on another thread at
    /// the same time as this one's (gradient buckets summed while backward goes on); an
    /// error where the library cannot have two threads in it at once.
    fn duplicate(&self) -> crate::Result<World>;
}

/// The ranks of a run (shared by what needs them).
pub type World = Arc<dyn Collective>;

/// A run on one process.
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut [f32]) {}
    fn all_reduce_sum_f64(&self, _: &mut [f64]) {}
    fn broadcast(&self, _: &mut Vec<u8>) {}
    fn duplicate(&self) -> crate::Result<World> {
        Ok(solo())
    }
}

/// The world of a run on one process.
pub fn solo() -> World {
    Arc::new(Solo)
}

/// The ranks this process belongs to: the MPI job that started it (`mpirun`, with the `mpi`
/// feature), or [`Solo`]. A binary built without the feature but started by an MPI launcher
/// with several ranks is refused: its ranks would each train the whole run.
pub fn from_launcher() -> crate::Result<World> {
    #[cfg(feature = "mpi")]
    if mpi::launched() {
        return Ok(Arc::new(mpi::Mpi::init()?));
    }
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
        .filter(|&n| n > 1);
    if let Some(n) = launched {
        return Err(crate::Error::Dist(format!(
            "started as one of {n} MPI ranks, but this convnet was built without MPI: build it with `cargo build --release --features mpi`"
        )));
    }
    Ok(solo())
}

static BATCH_NORM: std::sync::RwLock<Option<World>> = std::sync::RwLock::new(None);

/// While it lives, batch norm in training sums its statistics over the ranks of `world`
/// (`[train] sync_batch_norm`): each rank runs the same layers in the same order, so their
/// calls meet.
pub struct SyncBatchNorm(());

impl SyncBatchNorm {
    pub fn start(world: World) -> SyncBatchNorm {
        *BATCH_NORM.write().unwrap_or_else(|e| e.into_inner()) = Some(world);
        SyncBatchNorm(())
    }
}

impl Drop for SyncBatchNorm {
    fn drop(&mut self) {
        *BATCH_NORM.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The ranks batch norm sums its statistics over, if any (see [`SyncBatchNorm`]).
pub(crate) fn batch_norm_world() -> Option<World> {
    BATCH_NORM.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Rank 0's result on every rank: `Ok` with rank 0's value, or an error naming rank 0's
/// message. `f` runs on rank 0 only; `encode` / `decode` carry its value.
pub fn from_rank0<T>(
    world: &dyn Collective,
    f: impl FnOnce() -> crate::Result<T>,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> crate::Result<T>,
) -> crate::Result<T> {
    if world.size() == 1 {
        return f();
    }
    let mut bytes = Vec::new();
    let mine = if world.rank() == 0 {
        let r = f();
        bytes = match &r {
            Ok(v) => [&[0u8][..], &encode(v)].concat(),
            Err(e) => [&[1u8][..], e.to_string().as_bytes()].concat(),
        };
        Some(r)
    } else {
        None
    };
    world.broadcast(&mut bytes);
    match mine {
        Some(r) => r,
        None => match bytes.split_first() {
            Some((0, v)) => decode(v),
            Some((_, msg)) => Err(crate::Error::Dist(format!(
                "rank 0 failed: {}",
                String::from_utf8_lossy(msg)
            ))),
            None => Err(crate::Error::Dist("rank 0 sent nothing".into())),
        },
    }
}

/// `parts` in one message, each after its length (see [`unframe`]).
pub fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// The parts of a message [`frame`] made; `None` when it is cut short.
pub fn unframe(mut b: &[u8]) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    while !b.is_empty() {
        let (len, rest) = b.split_at_checked(8)?;
        let len = u64::from_le_bytes(len.try_into().ok()?) as usize;
        let (part, rest) = rest.split_at_checked(len)?;
        parts.push(part);
        b = rest;
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solo_world_is_rank_0_of_1_and_leaves_sums_alone() {
        let w = solo();
        assert_eq!((w.rank(), w.size()), (0, 1));
        let mut v = vec![1.5f32, -2.0];
        w.all_reduce_sum(&mut v);
        assert_eq!(v, [1.5, -2.0]);
        let got = from_rank0(&*w, || Ok(7u8), |v| vec![*v], |b| Ok(b[0])).unwrap();
        assert_eq!(got, 7);
    }

    #[test]
    fn framed_parts_come_back_whole_and_a_cut_message_is_refused() {
        let m = frame(&[b"ab", b"", b"xyz"]);
        assert_eq!(unframe(&m).unwrap(), vec![&b"ab"[..], b"", b"xyz"]);
        assert!(unframe(&m[..m.len() - 1]).is_none());
    }
}
