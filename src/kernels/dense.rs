//! A dense layer's forward on the convolutions' micro-kernel: `y = x W^T + b` with `W^T`
//! packed into the kernel's column panels and the input packed into buffers that live as long
//! as the layer's plan, so a forward allocates nothing; and [`Gemm`], the same product for
//! the dense layer's backward. Without a micro-kernel, `matrixmultiply` runs them.
//!
//! The forward's B (`W^T`, whose columns are W's rows) is packed panel by panel (`nr`
//! columns, every row of a panel contiguous, the last panel padded with zeros), so the kernel
//! streams each panel in order: read in place, a row-major `in_f x units` B's panels are `nr`
//! values every `units` (3 cache lines every 512 bytes for a 3136 -> 128 layer), and the
//! product ran at half the rate (see BENCHMARKS.md). The backward's B (W for the input
//! gradient, X for the weight gradient) is row-major with rows of `in_f`, each panel one or
//! three cache lines' worth of a row: read in place (no pass that copies 1.6 MiB of W every
//! step), only a last panel narrower than `nr` packed. Measured on the 3136 -> 128 layer at
//! batch 64 (Zen 3): the input gradient's product 1.45 ms packed, 1.11 ms in place.
//!
//! [`product`] splits C into rectangles for the threads and runs B's rows in passes that keep
//! a panel in L1 (see [`k_block`]).

use rayon::prelude::*;

use super::Epilogue;
use super::gemm::{MatRef, SendPtr, sgemm_par};
use super::micro::{Micro, Store};

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
        let b = Panels::packed(&self.wt, in_f, mk.nr, &self.offs);
        let store = Store::Accumulate;
        product(mk, (n, in_f, units), &self.packed[..alen], b, y, store, epi);
    }
}

/// B of a product, panel by panel: panel `q` (columns `q * nr..`) at `b[q * step..]`, its
/// row `p` at `offs[p]` from there. Packed by [`pack_b`] (`step = k * nr`, `offs[p] = p *
/// nr`), or a row-major B read in place (`step = nr`, `offs[p]` its row stride times `p`),
/// whose last panel, where narrower than `nr`, is packed apart in `tail` (its last row would
/// read past the end of B).
#[derive(Clone, Copy)]
struct Panels<'a> {
    b: &'a [f32],
    step: usize,
    offs: &'a [usize],
    /// Panels read from `b`; the one after them (if any) from `tail`.
    full: usize,
    tail: (&'a [f32], &'a [usize]),
}

impl<'a> Panels<'a> {
    fn packed(b: &'a [f32], k: usize, nr: usize, offs: &'a [usize]) -> Panels<'a> {
        Panels {
            b,
            step: k * nr,
            offs,
            full: usize::MAX,
            tail: (&[], &[]),
        }
    }

    /// Panel `q` and its row offsets.
    fn panel(&self, q: usize) -> (&'a [f32], &'a [usize]) {
        if q < self.full {
            (&self.b[q * self.step..], self.offs)
        } else {
            self.tail
        }
    }
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

/// Rows of B per pass of a product (`kc`): one panel's `kc x nr` values fill half the
/// running CPU's L1 data cache, so a panel stays there while every row block of A meets it.
fn k_block(mk: Micro, k: usize) -> usize {
    let kc = (super::cache::caches().l1d / 2 / (mk.nr * std::mem::size_of::<f32>())).max(16);
    // passes of even length: 3136 as 4 x 784 rather than 12 x 256 + 64
    k.div_ceil(k.div_ceil(kc).max(1)).max(1)
}

/// Row blocks and column panels per task of a product: at least four tasks per thread where
/// the sizes allow, split by column panels first (each task then reads all of A's rows for
/// its panels of B, one panel's pass staying in L1 while every row block meets it), by row
/// blocks only where there are too few panels. (On Zen 3 a 3136 -> 128 forward at batch 64
/// and 256 ran alike as 8 column groups by 1 row group or as 4 x 2 and 2 x 4, which a count
/// of the values each task reads would pick; tasks of rows alone made the backward's
/// products 20-50% slower.)
fn task_shape((row_blocks, panels): (usize, usize)) -> (usize, usize) {
    let want = 4 * rayon::current_num_threads();
    let qg = panels.div_ceil(want.min(panels).max(1));
    let tq = panels.div_ceil(qg);
    (
        row_blocks.div_ceil(want.div_ceil(tq).min(row_blocks).max(1)),
        qg,
    )
}

/// `C (m x n) (+)= A B` for packed A (`m x k`) and B, then `epi` on each task's rows of C:
/// `Store::Accumulate` adds to C, `Store::Replace` overwrites it. Parallel tasks own
/// rectangles of C (groups of column panels by groups of row blocks, at least four tasks
/// per thread where the sizes allow); each runs B's rows in passes of [`k_block`]. Each
/// value of C is its passes' sums added in `k` order, each pass one kernel call's sum:
/// neither the thread count nor the task shape changes a result.
fn product(
    mk: Micro,
    (m, k, n): (usize, usize, usize),
    packed: &[f32],
    b: Panels,
    c: &mut [f32],
    store: Store,
    epi: Option<Epilogue>,
) {
    let (mr, nr) = (mk.mr, mk.nr);
    let (row_blocks, panels) = (m.div_ceil(mr), n.div_ceil(nr));
    if row_blocks == 0 || panels == 0 {
        return;
    }
    assert!(c.len() >= m * n && packed.len() >= mk.packed_a_len(m, k));
    let kc = k_block(mk, k);
    let (rg, qg) = task_shape((row_blocks, panels));
    let (tasks_r, tasks_q) = (row_blocks.div_ceil(rg), panels.div_ceil(qg));
    let cp = SendPtr(c.as_mut_ptr());
    (0..tasks_r * tasks_q).into_par_iter().for_each(|t| {
        let base = &cp;
        let blocks = (t / tasks_q) * rg..((t / tasks_q + 1) * rg).min(row_blocks);
        let cols = (t % tasks_q) * qg * nr..((t % tasks_q + 1) * qg * nr).min(n);
        let (i0, rows) = (blocks.start, (blocks.end * mr).min(m) - blocks.start * mr);
        for p0 in (0..k.max(1)).step_by(kc) {
            let kk = kc.min(k - p0);
            let store = if p0 == 0 { store } else { Store::Accumulate };
            // the task's row blocks over this pass: panels k * mr apart
            let a = (&packed[i0 * k * mr + p0 * mr..], k * mr);
            for q in cols.start / nr..cols.end.div_ceil(nr) {
                let (bq, offs) = b.panel(q);
                let width = nr.min(n - q * nr);
                // SAFETY: this task owns rows `blocks` x columns `cols` of C (tasks tile C
                // without overlap); the block written is its rows (stride n) at columns
                // q * nr.. (width of them), within both and within `c` (asserted above).
                unsafe {
                    let at = base.0.add(i0 * mr * n + q * nr);
                    mk.panel_to(rows, kk, a, bq, &offs[p0..], at, n, width, store);
                }
            }
        }
        if let Some(epi) = epi {
            for r in i0 * mr..i0 * mr + rows {
                // SAFETY: row r's columns `cols` belong to this task alone (as above)
                let row = unsafe {
                    std::slice::from_raw_parts_mut(base.0.add(r * n + cols.start), cols.len())
                };
                epi(row);
            }
        }
    });
}

/// A matrix product `C = A B` with A and B of any strides, on the micro-kernel, with its
/// buffers (A packed; B packed, or only the ragged last panel of a row-major B, which is
/// read in place) kept between calls: after the first call at the largest sizes it
/// allocates nothing. A dense layer's backward runs on it. Without a micro-kernel,
/// `matrixmultiply` runs it.
pub struct Gemm {
    micro: Option<Micro>,
    packed: Vec<f32>,
    b: Vec<f32>,
    /// B's row offsets read in place, and those of a packed panel.
    offs: Vec<usize>,
    packed_offs: Vec<usize>,
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
            packed_offs: Vec::with_capacity(k),
        }
    }

    /// The values a [`Gemm::new`] of these sizes holds after its first product (A and B
    /// packed, B's last panel padded: the most it packs; both tables of row offsets), on the
    /// running CPU's micro-kernel.
    pub fn buffer_len((m, k, n): (usize, usize, usize)) -> u64 {
        let len = Micro::best().map_or(0, |mk| {
            let offs = 2 * k * std::mem::size_of::<usize>() / std::mem::size_of::<f32>();
            mk.packed_a_len(m, k) + packed_b_len(mk, k, n) + offs
        });
        len as u64
    }

    /// `C (m x n, row-major) = A (m x k) B (k x n)`. A row-major B (unit column stride) is
    /// read in place but for a last panel narrower than the kernel's; any other is packed.
    pub fn run(&mut self, (m, k, n): (usize, usize, usize), a: MatRef, b: MatRef, c: &mut [f32]) {
        let Some(mk) = self.micro else {
            sgemm_par(m, k, n, a, b, 0.0, c, n);
            return;
        };
        if m == 0 || n == 0 {
            return;
        }
        let nr = mk.nr;
        let in_place = b.cs == 1 && k > 0;
        let alen = mk.packed_a_len(m, k);
        // in place, only the last panel's columns are packed (all of B otherwise)
        let (b0, bn) = if in_place {
            (n / nr * nr, n % nr)
        } else {
            (0, n)
        };
        let blen = packed_b_len(mk, k, bn);
        for (buf, len) in [(&mut self.packed, alen), (&mut self.b, blen)] {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        pack_rows(mk, m, k, a, &mut self.packed[..alen]);
        let tail = MatRef {
            data: &b.data[b0 * b.cs..],
            ..b
        };
        pack_b(mk, (k, bn), tail, &mut self.b[..blen]);
        self.packed_offs.clear();
        self.packed_offs.extend((0..k).map(|p| p * nr));
        self.offs.clear();
        if in_place {
            self.offs.extend((0..k).map(|p| p * b.rs));
        }
        let panels = if in_place {
            Panels {
                b: b.data,
                step: nr,
                offs: &self.offs,
                full: n / nr,
                tail: (&self.b[..blen], &self.packed_offs),
            }
        } else {
            Panels::packed(&self.b[..blen], k, nr, &self.packed_offs)
        };
        let store = Store::Replace;
        product(mk, (m, k, n), &self.packed[..alen], panels, c, store, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn plain(m: usize, k: usize, n: usize, a: MatRef, b: MatRef) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| {
                        a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64
                    })
                    .sum();
            }
        }
        c
    }

    #[test]
    fn gemm_matches_a_plain_product_with_b_in_place_or_packed() {
        let mut r = Rng::new(5);
        // n a multiple of the AVX2 kernel's 16 columns and of neither; k = 0; k above a pass
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 0, 5),
            (13, 9, 32),
            (29, 33, 37),
            (50, 600, 70),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| r.normal()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| r.normal()).collect();
            let mut g = Gemm::new((m, k, n));
            for (an, am) in [("A", MatRef::rm(&a, k)), ("A^T", MatRef::rm_t(&a, m))] {
                // B row-major (read in place), or B^T of a row-major (packed)
                for (bn, bm) in [("B", MatRef::rm(&b, n)), ("B^T", MatRef::rm_t(&b, k))] {
                    let want = plain(m, k, n, am, bm);
                    let mut c = vec![f32::NAN; m * n];
                    g.run((m, k, n), am, bm, &mut c);
                    for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                        assert!(
                            (got as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{m}x{k}x{n} {an} {bn} [{i}]: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dense_products_give_the_same_bits_on_1_2_and_3_threads() {
        let (m, k, n) = (45, 700, 131);
        let mut r = Rng::new(9);
        let a: Vec<f32> = (0..m * k).map(|_| r.normal()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| r.normal()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| r.normal()).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let mut c = vec![0f32; m * n];
                Gemm::new((m, k, n)).run((m, k, n), MatRef::rm(&a, k), MatRef::rm(&b, n), &mut c);
                let mut y = vec![0f32; m * n];
                let mut f = DenseForward::new(k, n, m);
                f.set_weights(&w);
                f.run(m, &a, None, &mut y, None);
                (c, y)
            })
        };
        let (c1, y1) = run(1);
        for t in [2, 3] {
            let (c, y) = run(t);
            assert!(
                c.iter().zip(&c1).all(|(x, y)| x.to_bits() == y.to_bits()),
                "Gemm on {t} threads"
            );
            assert!(
                y.iter().zip(&y1).all(|(x, y)| x.to_bits() == y.to_bits()),
                "dense on {t} threads"
            );
        }
    }

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
