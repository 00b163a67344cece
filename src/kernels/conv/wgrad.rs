//! The weight gradient of a stride-1 convolution on the implicit lowering, as a product of
//! taps by output channels summed over positions:
//! `dW[o][t] = sum(img, p) x_padded[img][offset(t) + q(p)] * dY[img][o][p]`, where `q(p) =
//! oh * wq + ow` is the wide position of output `p = (oh, ow)` (see [`Implicit`]).
//!
//! A block is `R` taps by `V` vectors of output channels, held in registers for a whole chunk
//! of images: each position broadcasts the input value of each of the `R` taps (read in place
//! from the padded input, a contiguous run per output row) and multiplies it into the `V`
//! vectors of dY, which is first laid out position-major (`dY^T`: the output channels of one
//! position contiguous). Only real outputs are summed, no dot product is reduced across lanes,
//! and the loads are `V` vectors and `R` scalars per `R * V` fused multiply-adds, from data a
//! chunk keeps in L2 (dY^T of a chunk is read once per block of taps). Laying dY out costs a
//! pass over it (8 x 8 blocks transposed in registers).
//!
//! Images are taken in chunks of a fixed size in bytes; each chunk's sums go to their own
//! block of the scratch, added in chunk order, so the result depends neither on the thread
//! count nor on the machine's caches.

use rayon::prelude::*;

use super::Conv2dGeom;
use super::implicit::Implicit;
use crate::kernels::micro::Micro;

/// A run of positions: (offset into the padded input, row of dY^T, length).
type Run = (usize, usize, usize);

/// The buffers of [`backward_weight`], kept between calls by a compiled plan.
#[derive(Default)]
pub struct WeightScratch {
    /// The wide dY that [`FillWide`] writes (only on that path).
    dyw: Vec<f32>,
    /// A slab of chunks of dY, position-major: group `grp`, image `img` (from the slab's
    /// first), output `p`, channel `o` at `((grp * imgs + img) * positions + p) * cogp + o`;
    /// channels past `cout_g` are zero.
    dyt: Vec<f32>,
    /// The padded input.
    xp: Vec<f32>,
    /// Each chunk's sums: chunk `ch`, group `grp`, tap `t`, channel `o` at
    /// `((ch * groups + grp) * kdim + t) * cogp + o`.
    blocks: Vec<f32>,
    /// The taps' offsets into a padded image.
    offs: Vec<usize>,
    /// Each chunk's runs of positions: (input offset, dY^T row, length).
    segs: Vec<Run>,
}

/// Output channels per vector, and vectors per block at most, of this CPU's kernel.
fn lanes(mk: Micro) -> (usize, usize) {
    if mk.is_avx512() { (16, 4) } else { (8, 2) }
}

/// Taps per block for `cogp` output channels: as many as the registers hold beside the
/// block's first (widest) vectors of channels (24 accumulators of 16 lanes, 12 of 8), at
/// most 8 (each tap keeps a pointer in a general register).
fn taps_per_block(mk: Micro, cogp: usize) -> usize {
    let (lanes, vmax) = lanes(mk);
    let v = (cogp / lanes).clamp(1, vmax);
    if mk.is_avx512() {
        (24 / v).min(8)
    } else {
        (12 / v).min(8)
    }
}

/// The sizes of the weight gradient of `g` on `mk`: output channels per group rounded up to
/// whole vectors, images per chunk, and chunks.
struct Sizes {
    cogp: usize,
    chunk: usize,
    chunks: usize,
    /// Chunks laid out in dY^T at a time (the scratch holds this many, not the whole batch).
    slab: usize,
}

impl Sizes {
    /// Images are taken in chunks whose dY^T and padded input fit in 512 KiB (a fixed size,
    /// not the running CPU's L2: the chunks decide the order of the sums, so the result is
    /// the same on every machine of the same ISA).
    fn of(g: &Conv2dGeom, im: &Implicit, mk: Micro) -> Sizes {
        let cogp = g.cout_g().next_multiple_of(lanes(mk).0);
        let img_bytes = 4 * (g.groups * cogp * g.positions() + g.c_in * im.plane());
        let chunk = (524_288 / img_bytes.max(1)).clamp(1, g.n.max(1));
        Sizes {
            cogp,
            chunk,
            chunks: g.n.div_ceil(chunk),
            slab: (2 * rayon::current_num_threads()).max(4),
        }
    }
}

/// Values the weight gradient of `g` allocates at once: the padded input, a slab of dY^T and
/// the chunks' sums (for memory estimates; saturating). [`backward_weight_filled`] adds
/// [`wide_len`].
pub(crate) fn scratch_len(g: &Conv2dGeom, im: &Implicit) -> u64 {
    let Some(mk) = Micro::best() else {
        return 0;
    };
    let s = Sizes::of(g, im, mk);
    let slab_imgs = (s.slab * s.chunk).min(g.n) as u64;
    let dyt = crate::nn::count(&[g.groups, s.cogp, g.positions()]).saturating_mul(slab_imgs);
    let xp = crate::nn::count(&[g.n, g.c_in, im.plane()]);
    let blocks = crate::nn::count(&[s.chunks, g.groups, g.kdim(), s.cogp]);
    dyt.saturating_add(xp).saturating_add(blocks)
}

/// Values of the wide dY that [`backward_weight_filled`] keeps (saturating).
pub(crate) fn wide_len(g: &Conv2dGeom, im: &Implicit) -> u64 {
    crate::nn::count(&[g.n, g.c_out, im.q_all()])
}

/// Weight gradient of a stride-1 convolution (see the module's doc); `scratch`: empty, or
/// left by an earlier call for the same geometry with at least as many images.
pub(crate) fn backward_weight(
    mk: Micro,
    g: &Conv2dGeom,
    im: &Implicit,
    (x, dy): (&[f32], &[f32]),
    dw: &mut [f32],
    scratch: &mut WeightScratch,
) {
    run(mk, g, im, (x, (dy, g.positions(), g.out_w)), dw, scratch);
}

/// The wide dY of [`backward_weight_filled`]: `fill(dyw, qr)` writes image `i`'s channel
/// `o`, output row `oh`, into `dyw[(i * c_out + o) * qr + oh * row_stride..][..out_w]`.
pub(crate) type FillWide<'a> = dyn Fn(&mut [f32], usize) + Sync + 'a;

/// [`backward_weight`] with dY written by `fill` into a wide buffer in place of read from a
/// tensor: a pooling's backward spreads its gradient straight into it.
pub(crate) fn backward_weight_filled(
    mk: Micro,
    g: &Conv2dGeom,
    im: &Implicit,
    x: &[f32],
    fill: &FillWide,
    dw: &mut [f32],
    scratch: &mut WeightScratch,
) {
    let qr = im.q_all();
    let mut dyw = std::mem::take(&mut scratch.dyw);
    grow(&mut dyw, g.n * g.c_out * qr);
    fill(&mut dyw[..g.n * g.c_out * qr], qr);
    run(mk, g, im, (x, (&dyw, qr, im.row_stride())), dw, scratch);
    scratch.dyw = dyw;
}

/// `buf` at least `len` long: kept where it is, else replaced by zeros (a fresh allocation,
/// which the allocator may hand out already zeroed).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        *buf = vec![0.0; len];
    }
}

/// Where dY is read: channel `o` of image `img` at `src[(img * c_out + o) * plane..]`, its
/// rows `row` apart.
type DySource<'a> = (&'a [f32], usize, usize);

/// Images `i0..i0 + imgs` of dY into `dyt`, position-major (see [`WeightScratch::dyt`], with
/// `imgs` for `n`), zeros past `cout_g`. Eight channels at a time down all their rows, so
/// that dY (cold: the step before wrote it for the whole batch) is read as eight
/// sequential streams, which the hardware prefetches, and not as one row of every channel
/// at a time (as many streams as channels); an image's dY^T stays in cache meanwhile.
fn transpose_dy(
    g: &Conv2dGeom,
    (src, plane, row): DySource,
    (i0, imgs): (usize, usize),
    cogp: usize,
    dyt: &mut [f32],
) {
    let (p_all, cog) = (g.positions(), g.cout_g());
    dyt[..g.groups * imgs * p_all * cogp]
        .par_chunks_mut(p_all * cogp)
        .enumerate()
        .for_each(|(gi, dst)| {
            let (grp, img) = (gi / imgs, i0 + gi % imgs);
            let chan0 = (img * g.c_out + grp * cog) * plane;
            for o0 in (0..cog).step_by(8) {
                let chans = o0..(o0 + 8).min(cog);
                for oh in 0..g.out_h {
                    let at = oh * g.out_w * cogp;
                    let run = |o: usize| &src[chan0 + o * plane + oh * row..][..g.out_w];
                    let out = &mut dst[at..at + g.out_w * cogp];
                    transpose_row(run, g.out_w, chans.clone(), out, cogp);
                }
            }
            if cogp > cog {
                for pos in dst.chunks_exact_mut(cogp) {
                    pos[cog..].fill(0.0);
                }
            }
        });
}

/// Channels `chans` (at most 8) of one output row: `run(o)[j]` (position `j < len`) to
/// `dst[j * cogp + o]`. Transposed in registers where there are 8 of them and the CPU has
/// AVX2 (the micro-kernels' minimum), else one value at a time.
fn transpose_row<'a>(
    run: impl Fn(usize) -> &'a [f32],
    len: usize,
    chans: std::ops::Range<usize>,
    dst: &mut [f32],
    cogp: usize,
) {
    assert!(dst.len() >= len * cogp && chans.end <= cogp && chans.len() <= 8);
    let o0 = chans.start;
    if chans.len() == 8 && cfg!(target_arch = "x86_64") && crate::kernels::wide_avx2() {
        let rows: [&[f32]; 8] = std::array::from_fn(|v| run(o0 + v));
        for j0 in (0..len).step_by(8) {
            let n = 8.min(len - j0);
            let src: [*const f32; 8] = std::array::from_fn(|v| rows[v][j0..j0 + n].as_ptr());
            let out = &mut dst[j0 * cogp + o0..][..(n - 1) * cogp + 8];
            // SAFETY: `src` rows hold `n` values each, `out` holds rows `j < n` of 8 values
            // `cogp` apart (both sliced above); `wide_avx2` checked the CPU.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::transpose8(&src, n, out.as_mut_ptr(), cogp)
            };
        }
        return;
    }
    for o in chans {
        let r = run(o);
        for (j, v) in r[..len].iter().enumerate() {
            dst[j * cogp + o] = *v;
        }
    }
}

/// The sums over chunks, groups and blocks of taps, a slab of chunks at a time, then added
/// in chunk order into `dw`.
fn run(
    mk: Micro,
    g: &Conv2dGeom,
    im: &Implicit,
    (x, dy): (&[f32], DySource),
    dw: &mut [f32],
    scratch: &mut WeightScratch,
) {
    let (kd, p_all) = (g.kdim(), g.positions());
    let sz = Sizes::of(g, im, mk);
    let (cogp, chunk) = (sz.cogp, sz.chunk);
    let WeightScratch {
        dyt,
        xp,
        blocks,
        offs,
        segs,
        ..
    } = scratch;
    grow(xp, im.padded_len(g, 0));
    grow(blocks, sz.chunks * g.groups * kd * cogp);
    grow(dyt, g.groups * (sz.slab * chunk).min(g.n) * p_all * cogp);
    im.pad_into(g, x, xp);
    im.offsets_into(g, offs);
    chunk_runs(g, im, chunk, segs);
    let per_chunk = g.groups * kd * cogp;
    for s0 in (0..sz.chunks).step_by(sz.slab) {
        let s1 = (s0 + sz.slab).min(sz.chunks);
        let (i0, imgs) = (s0 * chunk, (s1 * chunk).min(g.n) - s0 * chunk);
        transpose_dy(g, dy, (i0, imgs), cogp, dyt);
        let slab = Slab {
            dyt,
            xp,
            offs,
            segs,
            i0,
            imgs,
        };
        slab.sums(mk, g, im, &sz, &mut blocks[s0 * per_chunk..s1 * per_chunk]);
    }
    // chunk ch's sums before ch + 1's, into the first chunk's block, then transposed
    let (first, rest) = blocks[..sz.chunks * per_chunk].split_at_mut(per_chunk);
    first.par_chunks_mut(cogp).enumerate().for_each(|(i, acc)| {
        for later in rest.chunks_exact(per_chunk) {
            for (a, v) in acc.iter_mut().zip(&later[i * cogp..(i + 1) * cogp]) {
                *a += v;
            }
        }
    });
    let (first, cog) = (&*first, g.cout_g());
    dw.par_chunks_mut(kd).enumerate().for_each(|(row, dwr)| {
        let (grp, o) = (row / cog, row % cog);
        for (t, d) in dwr.iter_mut().enumerate() {
            *d = first[(grp * kd + t) * cogp + o];
        }
    });
}

/// One slab of chunks: its dY^T, with what every chunk shares.
struct Slab<'a> {
    dyt: &'a [f32],
    xp: &'a [f32],
    offs: &'a [usize],
    segs: &'a [Run],
    /// The slab's first image, and its images.
    i0: usize,
    imgs: usize,
}

impl Slab<'_> {
    /// Each chunk's sums into its block of `out`: one task per (chunk, group, block of taps).
    fn sums(&self, mk: Micro, g: &Conv2dGeom, im: &Implicit, sz: &Sizes, out: &mut [f32]) {
        let (cig, kd, p_all, cogp) = (g.cin_g(), g.kdim(), g.positions(), sz.cogp);
        let ((lanes, vmax), rb) = (lanes(mk), taps_per_block(mk, cogp));
        let plane_in = g.c_in * im.plane();
        out.par_chunks_mut(kd * cogp)
            .enumerate()
            .for_each(|(cg, out)| {
                let (ch, grp) = (cg / g.groups, cg % g.groups);
                // the chunk's first image, from the slab's, and its images
                let c0 = ch * sz.chunk;
                let imgs = sz.chunk.min(self.imgs - c0);
                // its runs: the first image's offsets plus a fixed step per image
                let runs = &self.segs[..imgs * self.segs.len() / sz.chunk];
                let xb = &self.xp[(self.i0 + c0) * plane_in + grp * cig * im.plane()..];
                let bb = &self.dyt[(grp * self.imgs + c0) * p_all * cogp..][..imgs * p_all * cogp];
                out.par_chunks_mut(rb * cogp)
                    .enumerate()
                    .for_each(|(tb, rows_out)| {
                        let taps = &self.offs[tb * rb..(tb * rb + rb).min(kd)];
                        let mut o0 = 0;
                        while o0 < cogp {
                            let v = ((cogp - o0) / lanes).min(vmax);
                            let b = (&bb[o0..], cogp);
                            let o = (&mut rows_out[o0..], cogp);
                            taps_block(mk, (xb, taps), b, runs, v, o);
                            o0 += v * lanes;
                        }
                    });
            });
    }
}

/// The runs of positions of the first `chunk` images: each output row (or, where rows are not
/// widened, each image) as (offset into the padded input, row of dY^T, length).
fn chunk_runs(g: &Conv2dGeom, im: &Implicit, chunk: usize, segs: &mut Vec<Run>) {
    segs.clear();
    let plane_in = g.c_in * im.plane();
    for img in 0..chunk {
        if im.row_stride() == g.out_w {
            segs.push((img * plane_in, img * g.positions(), g.positions()));
            continue;
        }
        for oh in 0..g.out_h {
            let p = img * g.positions() + oh * g.out_w;
            segs.push((img * plane_in + oh * im.row_stride(), p, g.out_w));
        }
    }
}

/// One block: taps `taps` (offsets from `xb`, at most the kernel's `R`) by `v` vectors of
/// output channels from `b` (dY^T rows `ldb` apart), summed over `runs`, written to `out`
/// (row `t` at `out[t * ldo..]`, `v` vectors of it).
fn taps_block(
    mk: Micro,
    (xb, taps): (&[f32], &[usize]),
    (b, ldb): (&[f32], usize),
    runs: &[Run],
    v: usize,
    (out, ldo): (&mut [f32], usize),
) {
    let (lanes, vmax) = lanes(mk);
    let (rows, cols) = (taps.len(), v * lanes);
    assert!((1..=8).contains(&rows) && (1..=vmax).contains(&v) && cols <= ldb);
    // every run's reads in bounds
    let last = taps.iter().max().copied().unwrap_or(0);
    for &(xo, row, len) in runs.iter().filter(|r| r.2 > 0) {
        assert!(xb.len() >= last + xo + len && b.len() >= (row + len - 1) * ldb + cols);
    }
    assert!(out.len() >= (rows - 1) * ldo + cols);
    let a: [*const f32; 8] = std::array::from_fn(|r| xb[taps[r.min(rows - 1)]..].as_ptr());
    let mut tile = [[0f32; 64]; 8];
    let k = Kernel {
        a: &a,
        b: b.as_ptr(),
        ldb,
        runs,
    };
    // SAFETY: the kernel reads a[r][run.0 + j] for r < rows and b[(run.1 + j) * ldb + c]
    // for j < run.2, c < cols (asserted above), and writes `tile`; the ISA was checked when
    // `mk` was made.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        macro_rules! pick {
            ($f:ident, $v:literal, $($r:literal)*) => {
                match rows {
                    $($r => x86::$f::<$r, $v>(k, &mut tile),)*
                    _ => unreachable!(),
                }
            };
        }
        match (mk.is_avx512(), v) {
            (true, 1) => pick!(avx512, 1, 1 2 3 4 5 6 7 8),
            (true, 2) => pick!(avx512, 2, 1 2 3 4 5 6 7 8),
            (true, 3) => pick!(avx512, 3, 1 2 3 4 5 6 7 8),
            (true, _) => pick!(avx512, 4, 1 2 3 4 5 6),
            (false, 1) => pick!(avx2, 1, 1 2 3 4 5 6 7 8),
            (false, _) => pick!(avx2, 2, 1 2 3 4 5 6),
        }
    }
    // (a micro-kernel, which `mk` is, exists on x86-64 only)
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "no weight-gradient kernel off x86-64 ({:?})",
        (k.ldb, tile.len())
    );
    for r in 0..rows {
        out[r * ldo..r * ldo + cols].copy_from_slice(&tile[r][..cols]);
    }
}

/// The operands of one block: each tap's first input value, dY^T at the block's first
/// channel with its row stride, and the runs of positions.
#[derive(Clone, Copy)]
struct Kernel<'a> {
    a: &'a [*const f32; 8],
    b: *const f32,
    ldb: usize,
    runs: &'a [Run],
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Kernel;
    use std::arch::x86_64::*;

    /// `n <= 8` values of each of 8 rows `src` to `n` rows of 8 at `dst`, `ld` apart.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose8(src: &[*const f32; 8], n: usize, dst: *mut f32, ld: usize) {
        // SAFETY (whole body): the contract of `transpose_row`'s call
        unsafe {
            let mut r: [__m256; 8] = if n == 8 {
                std::array::from_fn(|v| _mm256_loadu_ps(src[v]))
            } else {
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes);
                std::array::from_fn(|v| _mm256_maskload_ps(src[v], mask))
            };
            crate::kernels::x86::transpose8(&mut r);
            for (j, v) in r.iter().enumerate().take(n) {
                _mm256_storeu_ps(dst.add(j * ld), *v);
            }
        }
    }

    /// `R` taps x `V` vectors of 16 channels.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // (indices into registers)
    pub(super) unsafe fn avx512<const R: usize, const V: usize>(
        k: Kernel,
        tile: &mut [[f32; 64]; 8],
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        // SAFETY (whole body): the contract of `taps_block`
        unsafe {
            for &(xo, row, len) in k.runs {
                let ap: [*const f32; R] = std::array::from_fn(|r| k.a[r].add(xo));
                let mut bp = k.b.add(row * k.ldb);
                for j in 0..len {
                    let bv: [__m512; V] = std::array::from_fn(|c| _mm512_loadu_ps(bp.add(16 * c)));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*ap[r].add(j));
                        for c in 0..V {
                            acc_r[c] = _mm512_fmadd_ps(x, bv[c], acc_r[c]);
                        }
                    }
                    bp = bp.add(k.ldb);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for c in 0..V {
                    _mm512_storeu_ps(tile[r].as_mut_ptr().add(16 * c), acc_r[c]);
                }
            }
        }
    }

    /// `R` taps x `V` vectors of 8 channels.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // (indices into registers)
    pub(super) unsafe fn avx2<const R: usize, const V: usize>(
        k: Kernel,
        tile: &mut [[f32; 64]; 8],
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        // SAFETY (whole body): the contract of `taps_block`
        unsafe {
            for &(xo, row, len) in k.runs {
                let ap: [*const f32; R] = std::array::from_fn(|r| k.a[r].add(xo));
                let mut bp = k.b.add(row * k.ldb);
                for j in 0..len {
                    let bv: [__m256; V] = std::array::from_fn(|c| _mm256_loadu_ps(bp.add(8 * c)));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let x = _mm256_set1_ps(*ap[r].add(j));
                        for c in 0..V {
                            acc_r[c] = _mm256_fmadd_ps(x, bv[c], acc_r[c]);
                        }
                    }
                    bp = bp.add(k.ldb);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for c in 0..V {
                    _mm256_storeu_ps(tile[r].as_mut_ptr().add(8 * c), acc_r[c]);
                }
            }
        }
    }
}
