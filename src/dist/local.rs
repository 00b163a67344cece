//! Ranks as threads of one process: the exchanges of data-parallel training without MPI, for
//! tests of what the ranks say to each other (a failing rank, unequal parts, buckets).
//! Sums add the ranks' values in rank order, so every rank gets the same bits.

use std::sync::{Arc, Barrier, Mutex};

use super::{Collective, World};

/// What a rank put in for the current exchange.
#[derive(Clone)]
enum Payload {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<u8>),
}

/// The exchange point of one set of ranks.
struct Shared {
    slots: Mutex<Vec<Option<Payload>>>,
    barrier: Barrier,
    /// The sets made by `duplicate`, k-th duplicate of every rank on the k-th set.
    dups: Mutex<Vec<Arc<Shared>>>,
}

impl Shared {
    fn new(n: usize) -> Arc<Shared> {
        Arc::new(Shared {
            slots: Mutex::new(vec![None; n]),
            barrier: Barrier::new(n),
            dups: Mutex::new(Vec::new()),
        })
    }
}

/// One rank of a set of threads (see [`local_ranks`]).
pub struct LocalRank {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
    /// Duplicates this rank made so far.
    made: Mutex<usize>,
}

/// `n` ranks that exchange through memory: give each to a thread of its own.
pub fn local_ranks(n: usize) -> Vec<World> {
    let shared = Shared::new(n);
    (0..n)
        .map(|rank| {
            Arc::new(LocalRank {
                rank,
                size: n,
                shared: shared.clone(),
                made: Mutex::new(0),
            }) as World
        })
        .collect()
}

impl LocalRank {
    /// Put `mine` in, wait for every rank's, and return them all in rank order.
    fn exchange(&self, mine: Payload) -> Vec<Payload> {
        let slots = &self.shared.slots;
        let lock = || slots.lock().unwrap_or_else(|e| e.into_inner());
        lock()[self.rank] = Some(mine);
        self.shared.barrier.wait();
        let all: Vec<Payload> = lock().iter().flatten().cloned().collect();
        self.shared.barrier.wait();
        lock()[self.rank] = None;
        all
    }
}

impl Collective for LocalRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        let all = self.exchange(Payload::F32(buf.to_vec()));
        buf.fill(0.0);
        for p in all {
            if let Payload::F32(v) = p {
                buf.iter_mut().zip(v).for_each(|(a, b)| *a += b);
            }
        }
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let all = self.exchange(Payload::F64(buf.to_vec()));
        buf.fill(0.0);
        for p in all {
            if let Payload::F64(v) = p {
                buf.iter_mut().zip(v).for_each(|(a, b)| *a += b);
            }
        }
    }
    fn broadcast(&self, bytes: &mut Vec<u8>) {
        let all = self.exchange(Payload::Bytes(bytes.clone()));
        if let Some(Payload::Bytes(root)) = all.into_iter().next() {
            *bytes = root;
        }
    }
    fn duplicate(&self) -> crate::Result<World> {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        let shared = {
            let mut dups = self.shared.dups.lock().unwrap_or_else(|e| e.into_inner());
            if dups.len() <= *made {
                dups.push(Shared::new(self.size));
            }
            dups[*made].clone()
        };
        *made += 1;
        Ok(Arc::new(LocalRank {
            rank: self.rank,
            size: self.size,
            shared,
            made: Mutex::new(0),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_as_ranks_sum_and_broadcast() {
        let got: Vec<(Vec<f32>, Vec<u8>)> = std::thread::scope(|s| {
            let handles: Vec<_> = local_ranks(3)
                .into_iter()
                .map(|w| {
                    s.spawn(move || {
                        let mut v = vec![w.rank() as f32, 1.0];
                        w.all_reduce_sum(&mut v);
                        let mut b = vec![w.rank() as u8; w.rank() + 1];
                        w.broadcast(&mut b);
                        // a duplicate is a channel of its own, with the same ranks
                        let d = w.duplicate().unwrap();
                        let mut one = vec![1.0];
                        d.all_reduce_sum(&mut one);
                        assert_eq!(one, [3.0]);
                        (v, b)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (v, b) in got {
            assert_eq!(v, [3.0, 3.0]);
            assert_eq!(b, [0]);
        }
    }
}
