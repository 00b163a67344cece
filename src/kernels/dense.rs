//! A dense layer's forward on the convolutions' micro-kernel: `y = x W^T + b` with `W^T`
//! packed into the kernel's column panels and the input packed into buffers that live as long
//! as the layer's plan, so a forward allocates nothing; and [`Gemm`], the same product for
//! the dense layer's backward. Without a micro-kernel, `matrixmultiply` runs them.
//!
//! B is packed panel by panel (`nr` columns, every row of a panel contiguous, the last panel
//! padded with zeros), so the kernel streams each panel from memory in order; read in place,
//! a row-major B's panels are `nr` values every `n` (3 cache lines every 512 bytes for a
//! 3136 -> 128 layer), and the product ran at half the rate (see BENCHMARKS.md).

use rayon::prelude::*;

use super::Epilogue;
use super::gemm::{MatRef, sgemm_par};
use super::micro::{Micro, Store};

/// Rows of `x` per parallel task (a multiple of the register block's rows).
const ROW_BLOCKS_PER_TASK: usize = 4;

/// A dense layer's forward prepared for `in_f -> units` and up to `batch` rows.
pub struct DenseForward {
    micro: Option<Micro>,
    in_f: usize,
    units: usize,
    /// `W^T` (`in_f x units`) packed in column panels.
    wt: Vec<f32>,
    /// The weights as given, for the fallback.
    w: Vec<f32>,
    /// Packed rows of `x`.
    packed: Vec<f32>,
    /// Row offsets within a panel: row `p` at `p * nr`.
    offs: Vec<usize>,
}

impl DenseForward {
    pub fn new(in_f: usize, units: usize, batch: usize) -> DenseForward {
        let micro = Micro::best();
        DenseForward {
            micro,
            in_f,
            units,
            wt: Vec::new(),
            w: Vec::new(),
            packed: micro.map_or(Vec::new(), |mk| vec![0.0; mk.packed_a_len(batch, in_f)]),
            offs: micro.map_or(Vec::new(), |mk| (0..in_f).map(|p| p * mk.nr).collect()),
        }
    }

    /// The values a [`DenseForward::new`] of these sizes holds once its weights are set (the
    /// packed input, `W^T` packed with its last panel padded, the panel offsets), on the
    /// micro-kernel the running CPU picks.
    pub fn buffer_len(in_f: usize, units: usize, batch: usize) -> u64 {
        let len = match Micro::best() {
            Some(mk) => {
                let offs = in_f * std::mem::size_of::<usize>() / std::mem::size_of::<f32>();
                mk.packed_a_len(batch, in_f) + packed_b_len(mk, in_f, units) + offs
            }
            None => in_f * units,
        };
        len as u64
    }

    /// Take the weights, `(units, in_f)`.
    pub fn set_weights(&mut self, w: &[f32]) {
        let (in_f, units) = (self.in_f, self.units);
        match self.micro {
            Some(mk) => {
                let len = packed_b_len(mk, in_f, units);
                if self.wt.len() != len {
                    self.wt.clear();
                    self.wt.resize(len, 0.0);
                }
                pack_b(mk, (in_f, units), MatRef::rm_t(w, in_f), &mut self.wt);
            }
            None => {
                self.w.clear();
                self.w.extend_from_slice(w);
            }
        }
    }

    /// `y = x W^T + bias` for the `n` rows of `x`, then `epi` on each task's rows of `y`.
    ///
    /// # Shapes
    /// x: `(n, in_f)`, bias: `(units)`, y: `(n, units)`.
    pub fn run(
        &mut self,
        n: usize,
        x: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        epi: Option<Epilogue>,
    ) {
        let (in_f, units) = (self.in_f, self.units);
        let (x, y) = (&x[..n * in_f], &mut y[..n * units]);
        match bias {
            Some(b) => y
                .chunks_mut(units.max(1))
                .for_each(|r| r.copy_from_slice(b)),
            None => y.fill(0.0),
        }
        let Some(mk) = self.micro else {
            let wm = MatRef::rm_t(&self.w, in_f);
            sgemm_par(n, in_f, units, MatRef::rm(x, in_f), wm, 1.0, y, units);
            if let Some(epi) = epi {
                epi(y);
            }
            return;
        };
        let alen = mk.packed_a_len(n, in_f);
        pack_rows(mk, n, in_f, MatRef::rm(x, in_f), &mut self.packed[..alen]);
        let b = Panels {
            b: &self.wt,
            offs: &self.offs,
        };
        product(mk, (n, in_f, units), &self.packed[..alen], b, y, epi);
    }
}

/// B of a product packed by [`pack_b`], with the row offsets within a panel (`p * nr`).
#[derive(Clone, Copy)]
struct Panels<'a> {
    b: &'a [f32],
    offs: &'a [usize],
}

/// Values of a `k x n` B packed in panels of `nr` columns.
fn packed_b_len(mk: Micro, k: usize, n: usize) -> usize {
    n.div_ceil(mk.nr) * mk.nr * k
}

/// Pack the `k x n` matrix `b` (any strides) into panels of `nr` columns: panel `q` holds
/// rows `0..k` of columns `q * nr..`, each row's `nr` values together (zeros past `n`).
fn pack_b(mk: Micro, (k, n): (usize, usize), b: MatRef, dst: &mut [f32]) {
    let nr = mk.nr;
    dst[..packed_b_len(mk, k, n)]
        .par_chunks_mut((k * nr).max(1))
        .enumerate()
        .for_each(|(q, panel)| {
            let cols = nr.min(n - q * nr);
            let at = |p: usize, j: usize| b.data[p * b.rs + (q * nr + j) * b.cs];
            if b.cs == 1 {
                for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
                    row[..cols].copy_from_slice(&b.data[p * b.rs + q * nr..][..cols]);
                    row[cols..].fill(0.0);
                }
            } else {
                // a column of B is contiguous: read it along, in blocks of rows kept in L1
                for p0 in (0..k).step_by(64) {
                    let rows = &mut panel[p0 * nr..(p0 + 64).min(k) * nr];
                    for j in 0..nr {
                        for (i, row) in rows.chunks_exact_mut(nr).enumerate() {
                            row[j] = if j < cols { at(p0 + i, j) } else { 0.0 };
                        }
                    }
                }
            }
        });
}

/// Pack the `m x k` matrix `a` into `dst` ([`Micro::packed_a_len`] long), each panel of `mr`
/// rows in parallel.
fn pack_rows(mk: Micro, m: usize, k: usize, a: MatRef, dst: &mut [f32]) {
    dst.par_chunks_mut((k * mk.mr).max(1))
        .enumerate()
        .for_each(|(i, panel)| {
            let rows = mk.mr.min(m - i * mk.mr);
            panel.fill(0.0);
            let src = MatRef {
                data: &a.data[i * mk.mr * a.rs..],
                ..a
            };
            mk.pack_a_into(rows, k, src, panel);
        });
}

/// `C (m x n) += A B` for packed A (`m x k`) and B, in parallel tasks of rows, then `epi` on
/// each task's rows of C. Each value of C is one kernel call's sum in `k` order: the result
/// does not depend on the thread count.
fn product(
    mk: Micro,
    (m, k, n): (usize, usize, usize),
    packed: &[f32],
    b: Panels,
    c: &mut [f32],
    epi: Option<Epilogue>,
) {
    let task_rows = ROW_BLOCKS_PER_TASK * mk.mr;
    c[..m * n]
        .par_chunks_mut(task_rows * n)
        .enumerate()
        .for_each(|(t, ct)| {
            let rows = ct.len() / n.max(1);
            let a = &packed[t * task_rows * k..];
            for q in 0..n.div_ceil(mk.nr) {
                let cols = mk.nr.min(n - q * mk.nr);
                let c = &mut ct[q * mk.nr..];
                let panel = &b.b[q * k * mk.nr..(q + 1) * k * mk.nr];
                mk.panel(rows, k, a, panel, b.offs, c, n, cols, Store::Accumulate);
            }
            if let Some(epi) = epi {
                epi(ct);
            }
        });
}

/// A matrix product `C = A B` with A and B of any strides, on the micro-kernel, with its
/// buffers (A and B packed) kept between calls: after the first call at the largest sizes
/// it allocates nothing. A dense layer's backward runs on it. Without a micro-kernel,
/// `matrixmultiply` runs it.
pub struct Gemm {
    micro: Option<Micro>,
    packed: Vec<f32>,
    b: Vec<f32>,
    offs: Vec<usize>,
}

impl Gemm {
    /// A product of up to `m x k` by `k x n`, its buffers sized for it.
    pub fn new((m, k, n): (usize, usize, usize)) -> Gemm {
        let micro = Micro::best();
        Gemm {
            micro,
            packed: micro.map_or(Vec::new(), |mk| vec![0.0; mk.packed_a_len(m, k)]),
            b: micro.map_or(Vec::new(), |mk| vec![0.0; packed_b_len(mk, k, n)]),
            offs: Vec::with_capacity(k),
        }
    }

    /// The values a [`Gemm::new`] of these sizes holds after its first product (A and B
    /// packed, B's last panel padded; the panel offsets), on the running CPU's micro-kernel.
    pub fn buffer_len((m, k, n): (usize, usize, usize)) -> u64 {
        let len = Micro::best().map_or(0, |mk| {
            let offs = k * std::mem::size_of::<usize>() / std::mem::size_of::<f32>();
            mk.packed_a_len(m, k) + packed_b_len(mk, k, n) + offs
        });
        len as u64
    }

    /// `C (m x n, row-major) = A (m x k) B (k x n)`.
    pub fn run(&mut self, (m, k, n): (usize, usize, usize), a: MatRef, b: MatRef, c: &mut [f32]) {
        let Some(mk) = self.micro else {
            sgemm_par(m, k, n, a, b, 0.0, c, n);
            return;
        };
        c[..m * n].fill(0.0);
        if m == 0 || n == 0 {
            return;
        }
        let (alen, blen) = (mk.packed_a_len(m, k), packed_b_len(mk, k, n));
        for (buf, len) in [(&mut self.packed, alen), (&mut self.b, blen)] {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        pack_rows(mk, m, k, a, &mut self.packed[..alen]);
        pack_b(mk, (k, n), b, &mut self.b);
        self.offs.clear();
        self.offs.extend((0..k).map(|p| p * mk.nr));
        let b = Panels {
            b: &self.b,
            offs: &self.offs,
        };
        product(mk, (m, k, n), &self.packed[..alen], b, c, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn dense_forward_matches_a_plain_product_on_ragged_sizes() {
        let mut r = Rng::new(3);
        for &(in_f, units, batch) in &[(1, 1, 1), (7, 5, 3), (33, 17, 29), (300, 130, 50)] {
            let w: Vec<f32> = (0..units * in_f).map(|_| r.normal()).collect();
            let b: Vec<f32> = (0..units).map(|_| r.normal()).collect();
            let mut f = DenseForward::new(in_f, units, batch);
            f.set_weights(&w);
            for n in [batch, batch.div_ceil(2)] {
                let x: Vec<f32> = (0..n * in_f).map(|_| r.normal()).collect();
                let mut y = vec![f32::NAN; n * units];
                let relu = |v: &mut [f32]| v.iter_mut().for_each(|e| *e = e.max(0.0));
                f.run(n, &x, Some(&b), &mut y, Some(&relu));
                for i in 0..n {
                    for u in 0..units {
                        let s: f64 = (0..in_f)
                            .map(|p| x[i * in_f + p] as f64 * w[u * in_f + p] as f64)
                            .sum::<f64>()
                            + b[u] as f64;
                        let got = y[i * units + u] as f64;
                        assert!(
                            (got - s.max(0.0)).abs() <= 1e-4 * (1.0 + s.abs()),
                            "{in_f}x{units} n={n} [{i},{u}]: {got} vs {s}"
                        );
                    }
                }
            }
        }
    }
}
