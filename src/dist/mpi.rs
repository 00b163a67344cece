//! The ranks of an MPI job (`mpirun -np N convnet train SPEC`), through the `mpi` crate.
//!
//! Sums are a ring all-reduce written here on MPI's point-to-point calls (reduce-scatter,
//! then all-gather, as NCCL and Horovod do): chunk `c` of the buffer is summed starting at
//! rank `c` and going round the ring, always in that order, so every rank gets the same bits
//! and a run repeats itself exactly; `MPI_Allreduce` promises neither. Each rank sends and
//! receives `2 (N - 1) / N` times the buffer, what the bandwidth bound allows.
//!
//! MPI is asked for `MPI_THREAD_MULTIPLE`: gradient buckets are summed on a thread of their
//! own, over a duplicate of the communicator ([`Collective::duplicate`]), while the training
//! thread goes on (and may sum batch norm's statistics on the first). Each communicator's
//! calls come from one thread at a time (a mutex holds it). Where the library gives less,
//! the buckets wait for backward to end.

use std::ops::AddAssign;
use std::sync::{Arc, Mutex};

use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use super::Collective;
use crate::data::part_of;

/// The MPI job this process is a rank of.
pub struct Mpi {
    world: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    host: String,
    /// Several threads may call MPI at once.
    multiple: bool,
    // last: dropping the last holder finalizes MPI
    universe: Arc<Universe>,
}

// SAFETY: every call on a communicator goes through its mutex; two communicators are used
// from two threads at once only where MPI gave MPI_THREAD_MULTIPLE (`duplicate` checks it),
// and MPI_THREAD_SERIALIZED at least is checked in `init`.
unsafe impl Send for Mpi {}
// SAFETY: as above.
unsafe impl Sync for Mpi {}

/// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, `srun`).
pub fn launched() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

impl Mpi {
    /// Join the MPI job; an error when MPI was initialised before, or cannot give the
    /// thread support needed (one thread at a time at least).
    pub fn init() -> crate::Result<Mpi> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| crate::Error::Dist("MPI was initialised twice".into()))?;
        if threading < mpi::Threading::Serialized {
            return Err(crate::Error::Dist(format!(
                "the MPI library gives thread support {threading:?}; convnet needs Serialized"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let host = mpi::environment::processor_name().unwrap_or_default();
        Ok(Mpi {
            world: Mutex::new(world),
            rank,
            size,
            host,
            multiple: threading >= mpi::Threading::Multiple,
            universe: Arc::new(universe),
        })
    }

    fn ring<T>(&self, buf: &mut [T])
    where
        T: Equivalence + Copy + Default + AddAssign,
    {
        let (n, r) = (self.size, self.rank);
        if n == 1 || buf.is_empty() {
            return;
        }
        let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let next = world.process_at_rank(((r + 1) % n) as i32);
        let prev = world.process_at_rank(((r + n - 1) % n) as i32);
        let len = buf.len();
        let chunk = |c: usize| part_of(len, c % n, n);
        let mut got = vec![T::default(); len.div_ceil(n)];
        // reduce-scatter: after step s, chunk (r - s - 1) holds the sum of ranks r - s - 1 ..= r
        for s in 0..n - 1 {
            let (out, inc) = (chunk(r + n - s), chunk(r + 2 * n - s - 1));
            let got = &mut got[..inc.len()];
            mpi::point_to_point::send_receive_into(&buf[out], &next, got, &prev);
            // the sum so far plus this rank's part: the same order on every rank
            for (a, &b) in buf[inc].iter_mut().zip(got.iter()) {
                let mine = *a;
                *a = b;
                *a += mine;
            }
        }
        // all-gather: rank r holds the whole sum of chunk r + 1; pass the sums round
        for s in 0..n - 1 {
            let (out, inc) = (chunk(r + 1 + n - s), chunk(r + n - s));
            let got = &mut got[..inc.len()];
            mpi::point_to_point::send_receive_into(&buf[out], &next, got, &prev);
            buf[inc].copy_from_slice(got);
        }
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        self.ring(buf);
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        self.ring(buf);
    }
    fn broadcast(&self, bytes: &mut Vec<u8>) {
        let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let root = world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
    }
    fn host(&self) -> String {
        self.host.clone()
    }
    fn duplicate(&self) -> crate::Result<super::World> {
        if !self.multiple {
            return Err(crate::Error::Dist(
                "the MPI library does not let two threads call it at once (MPI_THREAD_MULTIPLE)"
                    .into(),
            ));
        }
        let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::new(Mpi {
            world: Mutex::new(world.duplicate()),
            rank: self.rank,
            size: self.size,
            host: self.host.clone(),
            multiple: true,
            universe: self.universe.clone(),
        }))
    }
}
