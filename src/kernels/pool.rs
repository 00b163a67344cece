//! Pooling kernels: max (with argmax for backward), average (with or without the padding
//! counted, PyTorch's divisor rule), global max, and adaptive average. 1-D pooling runs as
//! 2-D with `h = 1`. Every plane `(n, c)` is independent, so planes run in parallel.

use rayon::prelude::*;

use super::pool2x2::{self, nan_max};

/// Geometry of a 2-D pooling window sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// Output length of a pooling axis, as PyTorch computes it: with `ceil_mode` the last window
/// may hang over the end, but must start inside the input or its left padding.
pub fn pool_out_len(
    n: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ceil_mode: bool,
) -> Option<usize> {
    if stride == 0 || k == 0 || n + 2 * pad < k {
        return None;
    }
    let span = n + 2 * pad - k;
    let mut out = if ceil_mode {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    if ceil_mode && (out - 1) * stride >= n + pad {
        out -= 1;
    }
    Some(out)
}

impl Pool2dGeom {
    /// A global max pooling: one window over each whole `h x w` plane.
    pub fn global(n: usize, c: usize, h: usize, w: usize) -> Pool2dGeom {
        Pool2dGeom {
            n,
            c,
            h,
            w,
            k_h: h,
            k_w: w,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
            out_h: 1,
            out_w: 1,
        }
    }
    /// The input rows `[lo, hi)` of output row `oh`, clipped to the input.
    fn rows_of(&self, oh: usize) -> (usize, usize) {
        clip(oh, self.stride_h, self.pad_h, self.k_h, self.h)
    }
    /// The input columns `[lo, hi)` of output column `ow`, clipped to the input.
    fn cols_of(&self, ow: usize) -> (usize, usize) {
        clip(ow, self.stride_w, self.pad_w, self.k_w, self.w)
    }
    /// The most common pooling, which gets its own loops: 2x2 windows, stride 2, no padding,
    /// every window inside the input.
    pub fn is_2x2_tiling(&self) -> bool {
        self.k_h == 2
            && self.k_w == 2
            && self.stride_h == 2
            && self.stride_w == 2
            && self.pad_h == 0
            && self.pad_w == 0
            && 2 * self.out_h <= self.h
            && 2 * self.out_w <= self.w
    }
    /// Planes (n * c).
    pub fn planes(&self) -> usize {
        self.n * self.c
    }
    fn window(&self, oh: usize, ow: usize) -> (isize, isize, isize, isize) {
        let h0 = (oh * self.stride_h) as isize - self.pad_h as isize;
        let w0 = (ow * self.stride_w) as isize - self.pad_w as isize;
        (h0, h0 + self.k_h as isize, w0, w0 + self.k_w as isize)
    }
}

/// Marks an output whose window holds no input element (impossible once pad <= k / 2).
pub const NO_INDEX: u32 = u32::MAX;

/// Input range `[lo, hi)` of window `o` along an axis: start `o * stride - pad`, `k` taps,
/// clipped to `0..n`.
fn clip(o: usize, stride: usize, pad: usize, k: usize, n: usize) -> (usize, usize) {
    let start = o * stride;
    let lo = start.saturating_sub(pad).min(n);
    let hi = (start + k).saturating_sub(pad).min(n);
    (lo, hi.max(lo))
}

/// Max pooling forward: the values only; [`max_argmax`] finds where they came from when
/// backward needs it, so inference never builds an index buffer.
///
/// # Shapes
/// x: `(n, c, h, w)`; y: `(n, c, out_h, out_w)`.
pub fn max_forward(g: &Pool2dGeom, x: &[f32], y: &mut [f32]) {
    let (hw, p) = (g.h * g.w, g.out_h * g.out_w);
    let two_by_two = g.is_2x2_tiling();
    y.par_chunks_mut(p).enumerate().for_each(|(plane, yp)| {
        let xp = &x[plane * hw..(plane + 1) * hw];
        if two_by_two {
            let w = g.w;
            for (oh, yr) in yp.chunks_mut(g.out_w).enumerate() {
                pool2x2::max_row(&xp[2 * oh * w..], &xp[(2 * oh + 1) * w..], yr);
            }
            return;
        }
        for oh in 0..g.out_h {
            let (r0, r1) = g.rows_of(oh);
            for ow in 0..g.out_w {
                let (c0, c1) = g.cols_of(ow);
                let mut best = f32::NEG_INFINITY;
                for r in r0..r1 {
                    for &v in &xp[r * g.w + c0..r * g.w + c1] {
                        best = nan_max(best, v);
                    }
                }
                yp[oh * g.out_w + ow] = best;
            }
        }
    });
}

/// Max pooling with windows of `k_h x k_w` and the same strides (no padding) over a block of
/// `rows x w` values at row stride `ld` (a band of a convolution's output, still in cache):
/// `out` gets `rows / k_h` rows of `w / k_w` maxima, row stride `w / k_w`. Sequential: it
/// runs inside a parallel task. The values are those of [`max_forward`].
pub fn max_pool_block(
    (k_h, k_w): (usize, usize),
    x: &[f32],
    (rows, w, ld): (usize, usize, usize),
    out: &mut [f32],
) {
    let (out_h, out_w) = (rows / k_h, w / k_w);
    if (k_h, k_w) == (2, 2) {
        for (oh, yr) in out.chunks_exact_mut(out_w.max(1)).take(out_h).enumerate() {
            pool2x2::max_row(&x[2 * oh * ld..], &x[(2 * oh + 1) * ld..], yr);
        }
        return;
    }
    for (oh, orow) in out.chunks_exact_mut(out_w.max(1)).take(out_h).enumerate() {
        for (ow, o) in orow.iter_mut().enumerate() {
            let mut best = f32::NEG_INFINITY;
            for r in oh * k_h..(oh + 1) * k_h {
                for &v in &x[r * ld + ow * k_w..r * ld + (ow + 1) * k_w] {
                    best = nan_max(best, v);
                }
            }
            *o = best;
        }
    }
}

/// [`max_pool_block`] for 2x2 windows of a channels-last block (`rows x w` positions of `c`
/// channels), written as planes: channel `o`'s pooled rows from `out + o * ld`.
///
/// # Safety
/// For every `o < c`, the `(rows / 2) * (w / 2)` values from `out + o * ld` must be valid for
/// writes and accessed by no one else meanwhile.
pub unsafe fn max_pool_2x2_channels_last(
    x: &[f32],
    shape: (usize, usize, usize),
    out: *mut f32,
    ld: usize,
) {
    // SAFETY: the caller's contract
    unsafe { pool2x2::max_channels_last(x, shape, out, ld) }
}

/// [`max_pool_block`] for 2x2 windows, also writing each maximum's position in its window
/// (0 to 3: (0, 0), (0, 1), (1, 0), (1, 1), the first holding it) to `idx`: a training step
/// pools a convolution's output while it is in cache and keeps only these.
pub fn max_pool_block_argmax(
    x: &[f32],
    (rows, w, ld): (usize, usize, usize),
    out: &mut [f32],
    idx: &mut [u8],
) {
    let (out_h, out_w) = (rows / 2, w / 2);
    for oh in 0..out_h {
        let (o, i) = (
            &mut out[oh * out_w..][..out_w],
            &mut idx[oh * out_w..][..out_w],
        );
        pool2x2::max_row_argmax(&x[2 * oh * ld..], &x[(2 * oh + 1) * ld..], o, i);
    }
}

/// Backward of a 2x2, stride-2 max pooling from the window positions
/// [`max_pool_block_argmax`] kept: the values of [`max_backward_saved`].
///
/// # Shapes
/// idx, dy: `(n, c, out_h, out_w)`; dx: `(n, c, h, w)` with `h >= 2 out_h`, `w >= 2 out_w`.
pub fn max_backward_2x2(g: &Pool2dGeom, idx: &[u8], dy: &[f32], dx: &mut [f32]) {
    max_backward_2x2_strided(g, idx, dy, dx, (g.h * g.w, g.w));
}

/// [`max_backward_2x2`] into planes `plane_stride` apart whose rows are `row_stride` apart
/// (a convolution's wide layout): each plane's `h x w` values are written, nothing else.
pub fn max_backward_2x2_strided(
    g: &Pool2dGeom,
    idx: &[u8],
    dy: &[f32],
    dx: &mut [f32],
    (plane_stride, row_stride): (usize, usize),
) {
    debug_assert!(g.is_2x2_tiling() && row_stride >= g.w);
    let (p, w, rs) = (g.out_h * g.out_w, g.w, row_stride);
    dx[..g.planes() * plane_stride]
        .par_chunks_mut(plane_stride)
        .enumerate()
        .for_each(|(plane, dxp)| {
            let (ip, dyp) = (&idx[plane * p..][..p], &dy[plane * p..][..p]);
            for oh in 0..g.out_h {
                let (top, bottom) = dxp[2 * oh * rs..(2 * oh + 1) * rs + w].split_at_mut(rs);
                let r = oh * g.out_w..(oh + 1) * g.out_w;
                pool2x2::scatter_row(&ip[r.clone()], &dyp[r], top, bottom);
                top[2 * g.out_w..w].fill(0.0);
                bottom[2 * g.out_w..w].fill(0.0);
            }
            for r in 2 * g.out_h..g.h {
                dxp[r * rs..r * rs + w].fill(0.0);
            }
        });
}

/// For each output of a max pooling, the flat in-plane index of its maximum: the first
/// element of the window, in scan order, that holds the output's value (NaN matching NaN).
pub fn max_argmax(g: &Pool2dGeom, x: &[f32], y: &[f32], idx: &mut [u32]) {
    let (hw, p) = (g.h * g.w, g.out_h * g.out_w);
    let two_by_two = g.is_2x2_tiling();
    let same = |v: f32, t: f32| v == t || (v.is_nan() && t.is_nan());
    idx.par_chunks_mut(p).enumerate().for_each(|(plane, ip)| {
        let xp = &x[plane * hw..(plane + 1) * hw];
        let yp = &y[plane * p..(plane + 1) * p];
        if two_by_two {
            let w = g.w;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let (t, i0) = (yp[oh * g.out_w + ow], 2 * oh * w + 2 * ow);
                    let i = [i0, i0 + 1, i0 + w, i0 + w + 1]
                        .into_iter()
                        .find(|&i| same(xp[i], t));
                    ip[oh * g.out_w + ow] = i.map_or(NO_INDEX, |i| i as u32);
                }
            }
            return;
        }
        for oh in 0..g.out_h {
            let (r0, r1) = g.rows_of(oh);
            for ow in 0..g.out_w {
                let (c0, c1) = g.cols_of(ow);
                let target = yp[oh * g.out_w + ow];
                let mut found = NO_INDEX;
                'window: for r in r0..r1 {
                    for c in c0..c1 {
                        let v = xp[r * g.w + c];
                        if same(v, target) {
                            found = (r * g.w + c) as u32;
                            break 'window;
                        }
                    }
                }
                ip[oh * g.out_w + ow] = found;
            }
        }
    });
}

/// Max pooling backward from the saved input and output, without an index buffer: each
/// output's gradient goes to the element [`max_argmax`] picks. For the 2x2 tiling this is one
/// pass that writes every element of dx once. dx: `(n, c, h, w)`, fully overwritten.
pub fn max_backward_saved(g: &Pool2dGeom, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
    if !g.is_2x2_tiling() {
        let mut idx = vec![0u32; dy.len()];
        max_argmax(g, x, y, &mut idx);
        return max_backward(g, dy, &idx, dx);
    }
    let (hw, p, w) = (g.h * g.w, g.out_h * g.out_w, g.w);
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
        let xp = &x[plane * hw..(plane + 1) * hw];
        let (yp, dyp) = (
            &y[plane * p..(plane + 1) * p],
            &dy[plane * p..(plane + 1) * p],
        );
        for oh in 0..g.out_h {
            let (top, bottom) = dxp[2 * oh * w..(2 * oh + 2) * w].split_at_mut(w);
            let rows = (&xp[2 * oh * w..], &xp[(2 * oh + 1) * w..]);
            let outs = (
                &yp[oh * g.out_w..][..g.out_w],
                &dyp[oh * g.out_w..][..g.out_w],
            );
            pool2x2::backward_row(rows, outs, top, bottom);
        }
        for r in 0..2 * g.out_h {
            dxp[r * w + 2 * g.out_w..(r + 1) * w].fill(0.0);
        }
        dxp[2 * g.out_h * w..].fill(0.0);
    });
}

/// Max pooling backward: each output's gradient goes to its argmax.
pub fn max_backward(g: &Pool2dGeom, dy: &[f32], idx: &[u32], dx: &mut [f32]) {
    let (hw, p) = (g.h * g.w, g.out_h * g.out_w);
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
        dxp.fill(0.0);
        let dyp = &dy[plane * p..(plane + 1) * p];
        let ip = &idx[plane * p..(plane + 1) * p];
        for (d, &i) in dyp.iter().zip(ip) {
            if i != NO_INDEX {
                dxp[i as usize] += d;
            }
        }
    });
}

/// The window of output (oh, ow) clipped to the input, and its divisor.
fn avg_window(
    g: &Pool2dGeom,
    oh: usize,
    ow: usize,
    count_include_pad: bool,
) -> (usize, usize, usize, usize, f32) {
    let (h0, h1, w0, w1) = g.window(oh, ow);
    // PyTorch: the counted window is clipped to the padded input, then to the input.
    let ph1 = h1.min((g.h + g.pad_h) as isize);
    let pw1 = w1.min((g.w + g.pad_w) as isize);
    let padded = ((ph1 - h0) * (pw1 - w0)) as f32;
    let (ch0, ch1) = (h0.max(0) as usize, h1.min(g.h as isize).max(0) as usize);
    let (cw0, cw1) = (w0.max(0) as usize, w1.min(g.w as isize).max(0) as usize);
    let inside = (ch1.saturating_sub(ch0) * cw1.saturating_sub(cw0)) as f32;
    let div = if count_include_pad { padded } else { inside };
    (ch0, ch1.max(ch0), cw0, cw1.max(cw0), div)
}

/// Average pooling forward.
pub fn avg_forward(g: &Pool2dGeom, x: &[f32], y: &mut [f32], count_include_pad: bool) {
    let (hw, p) = (g.h * g.w, g.out_h * g.out_w);
    y.par_chunks_mut(p).enumerate().for_each(|(plane, yp)| {
        let xp = &x[plane * hw..(plane + 1) * hw];
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                let (h0, h1, w0, w1, div) = avg_window(g, oh, ow, count_include_pad);
                let mut s = 0f32;
                for ih in h0..h1 {
                    s += xp[ih * g.w + w0..ih * g.w + w1].iter().sum::<f32>();
                }
                yp[oh * g.out_w + ow] = if div > 0.0 { s / div } else { 0.0 };
            }
        }
    });
}

/// Average pooling backward.
pub fn avg_backward(g: &Pool2dGeom, dy: &[f32], dx: &mut [f32], count_include_pad: bool) {
    let (hw, p) = (g.h * g.w, g.out_h * g.out_w);
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
        dxp.fill(0.0);
        let dyp = &dy[plane * p..(plane + 1) * p];
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                let (h0, h1, w0, w1, div) = avg_window(g, oh, ow, count_include_pad);
                if div <= 0.0 {
                    continue;
                }
                let d = dyp[oh * g.out_w + ow] / div;
                for ih in h0..h1 {
                    for v in &mut dxp[ih * g.w + w0..ih * g.w + w1] {
                        *v += d;
                    }
                }
            }
        }
    });
}

/// Adaptive average pooling bounds of output `i` of `out` over an axis of length `n`
/// (PyTorch: start = floor(i * n / out), end = ceil((i + 1) * n / out)).
pub fn adaptive_bounds(i: usize, out: usize, n: usize) -> (usize, usize) {
    (i * n / out, ((i + 1) * n).div_ceil(out))
}

/// Adaptive average pooling forward; `y` is `(planes, out_h, out_w)`.
pub fn adaptive_avg_forward(
    _planes: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    x: &[f32],
    y: &mut [f32],
) {
    let p = out_h * out_w;
    y.par_chunks_mut(p).enumerate().for_each(|(plane, yp)| {
        let xp = &x[plane * h * w..(plane + 1) * h * w];
        for oh in 0..out_h {
            let (h0, h1) = adaptive_bounds(oh, out_h, h);
            for ow in 0..out_w {
                let (w0, w1) = adaptive_bounds(ow, out_w, w);
                let mut s = 0f32;
                for ih in h0..h1 {
                    s += xp[ih * w + w0..ih * w + w1].iter().sum::<f32>();
                }
                yp[oh * out_w + ow] = s / ((h1 - h0) * (w1 - w0)) as f32;
            }
        }
    });
}

/// Adaptive average pooling backward.
pub fn adaptive_avg_backward(
    planes: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    dy: &[f32],
    dx: &mut [f32],
) {
    let p = out_h * out_w;
    debug_assert_eq!(dx.len(), planes * h * w);
    dx.par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(plane, dxp)| {
            dxp.fill(0.0);
            let dyp = &dy[plane * p..(plane + 1) * p];
            for oh in 0..out_h {
                let (h0, h1) = adaptive_bounds(oh, out_h, h);
                for ow in 0..out_w {
                    let (w0, w1) = adaptive_bounds(ow, out_w, w);
                    let d = dyp[oh * out_w + ow] / ((h1 - h0) * (w1 - w0)) as f32;
                    for ih in h0..h1 {
                        for v in &mut dxp[ih * w + w0..ih * w + w1] {
                            *v += d;
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Direct reference: gather each window's elements with an explicit padded index.
    fn reference(g: &Pool2dGeom, x: &[f32], include_pad: bool) -> (Vec<f32>, Vec<f32>) {
        let mut mx = Vec::new();
        let mut av = Vec::new();
        for plane in 0..g.planes() {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let mut best = f32::NEG_INFINITY;
                    let (mut s, mut cnt, mut cnt_pad) = (0f32, 0, 0);
                    for ki in 0..g.k_h {
                        for kj in 0..g.k_w {
                            let ih = (oh * g.stride_h + ki) as isize - g.pad_h as isize;
                            let iw = (ow * g.stride_w + kj) as isize - g.pad_w as isize;
                            if ih < (g.h + g.pad_h) as isize && iw < (g.w + g.pad_w) as isize {
                                cnt_pad += 1;
                            }
                            if ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w {
                                let v = x[plane * g.h * g.w + ih as usize * g.w + iw as usize];
                                best = best.max(v);
                                s += v;
                                cnt += 1;
                            }
                        }
                    }
                    mx.push(best);
                    av.push(s / if include_pad { cnt_pad } else { cnt } as f32);
                }
            }
        }
        (mx, av)
    }

    #[test]
    fn pools_match_reference() {
        let mut r = Rng::new(4);
        for _ in 0..300 {
            let (k_h, k_w) = (1 + r.below(4), 1 + r.below(4));
            let (pad_h, pad_w) = (r.below(k_h / 2 + 1), r.below(k_w / 2 + 1));
            let (h, w) = (1 + r.below(8) + k_h, 1 + r.below(8) + k_w);
            let (sh, sw) = (1 + r.below(3), 1 + r.below(3));
            let ceil = r.below(2) == 1;
            let g = Pool2dGeom {
                n: 1 + r.below(2),
                c: 1 + r.below(3),
                h,
                w,
                k_h,
                k_w,
                stride_h: sh,
                stride_w: sw,
                pad_h,
                pad_w,
                out_h: pool_out_len(h, k_h, sh, pad_h, ceil).unwrap(),
                out_w: pool_out_len(w, k_w, sw, pad_w, ceil).unwrap(),
            };
            let x: Vec<f32> = (0..g.planes() * h * w).map(|_| r.normal()).collect();
            let n_out = g.planes() * g.out_h * g.out_w;
            let (mut y, mut idx) = (vec![0f32; n_out], vec![0u32; n_out]);
            max_forward(&g, &x, &mut y);
            max_argmax(&g, &x, &y, &mut idx);
            for (k, &i) in idx.iter().enumerate() {
                let plane = k / (g.out_h * g.out_w);
                assert_eq!(
                    x[plane * h * w + i as usize].to_bits(),
                    y[k].to_bits(),
                    "argmax holds the max"
                );
            }
            let dy: Vec<f32> = (0..n_out).map(|_| r.normal()).collect();
            let mut want = vec![f32::NAN; x.len()];
            max_backward(&g, &dy, &idx, &mut want);
            let mut got = vec![f32::NAN; x.len()];
            max_backward_saved(&g, &x, &y, &dy, &mut got);
            assert_eq!(got, want, "saved backward {g:?}");
            let include = r.below(2) == 1;
            let (rm, ra) = reference(&g, &x, include);
            assert_eq!(y, rm, "{g:?}");
            let mut ya = vec![0f32; n_out];
            avg_forward(&g, &x, &mut ya, include);
            for (a, b) in ya.iter().zip(&ra) {
                assert!((a - b).abs() < 1e-5, "{a} {b} {g:?} include_pad={include}");
            }
        }
    }

    /// A 2x2 stride-2 max pooling of one image of `c` planes `h x w`.
    fn two_by_two(c: usize, h: usize, w: usize) -> Pool2dGeom {
        Pool2dGeom {
            n: 1,
            c,
            h,
            w,
            k_h: 2,
            k_w: 2,
            stride_h: 2,
            stride_w: 2,
            pad_h: 0,
            pad_w: 0,
            out_h: h / 2,
            out_w: w / 2,
        }
    }

    #[test]
    fn two_by_two_path_keeps_first_of_ties_and_lets_nan_win() {
        let mut r = Rng::new(8);
        let (h, w) = (7, 9);
        let g = two_by_two(2, h, w);
        let mut x: Vec<f32> = (0..2 * h * w).map(|_| r.below(3) as f32).collect();
        x[10] = f32::NAN;
        let (mut y, mut idx) = (vec![0f32; 24], vec![0u32; 24]);
        max_forward(&g, &x, &mut y);
        max_argmax(&g, &x, &y, &mut idx);
        for plane in 0..2 {
            for oh in 0..3 {
                for ow in 0..4 {
                    // scan order: the first maximum, or the first NaN
                    let mut best = (f32::NEG_INFINITY, u32::MAX);
                    for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let i = (2 * oh + dr) * w + 2 * ow + dc;
                        let v = x[plane * h * w + i];
                        if best.1 == u32::MAX || (!best.0.is_nan() && (v > best.0 || v.is_nan())) {
                            best = (v, i as u32);
                        }
                    }
                    let o = plane * 12 + oh * 4 + ow;
                    assert_eq!(idx[o], best.1, "plane {plane} ({oh}, {ow})");
                    assert!(y[o] == best.0 || (y[o].is_nan() && best.0.is_nan()));
                }
            }
        }
        assert!(y[0].is_nan(), "the window holding the NaN outputs NaN");
        let dy: Vec<f32> = (0..24).map(|_| r.normal()).collect();
        let mut want = vec![f32::NAN; x.len()];
        max_backward(&g, &dy, &idx, &mut want);
        let mut got = vec![f32::NAN; x.len()];
        max_backward_saved(&g, &x, &y, &dy, &mut got);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn ceil_mode_drops_window_starting_in_right_padding() {
        // PyTorch: MaxPool1d(2, stride=2, padding=1, ceil_mode=True) on length 4 gives 3 outputs.
        assert_eq!(pool_out_len(4, 2, 2, 1, true), Some(3));
        assert_eq!(pool_out_len(5, 2, 2, 0, true), Some(3));
        assert_eq!(pool_out_len(5, 2, 2, 0, false), Some(2));
        assert_eq!(pool_out_len(1, 3, 1, 0, false), None);
    }

    #[test]
    fn block_pooling_equals_max_forward_bit_for_bit() {
        let mut r = Rng::new(9);
        for _ in 0..100 {
            let (k_h, k_w) = (1 + r.below(3), 1 + r.below(3));
            let (h, w) = (k_h + r.below(9), k_w + r.below(9));
            let ld = w + r.below(3);
            let mut x: Vec<f32> = (0..h * ld).map(|_| r.below(4) as f32 - 1.5).collect();
            if r.below(3) == 0 {
                x[r.below(h * ld)] = f32::NAN;
            }
            let plane: Vec<f32> = (0..h)
                .flat_map(|i| x[i * ld..i * ld + w].to_vec())
                .collect();
            let g = Pool2dGeom {
                n: 1,
                c: 1,
                h,
                w,
                k_h,
                k_w,
                stride_h: k_h,
                stride_w: k_w,
                pad_h: 0,
                pad_w: 0,
                out_h: h / k_h,
                out_w: w / k_w,
            };
            let mut want = vec![0f32; g.out_h * g.out_w];
            max_forward(&g, &plane, &mut want);
            let mut got = vec![0f32; want.len()];
            max_pool_block((k_h, k_w), &x, (h, w, ld), &mut got);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{g:?}");
        }
    }

    #[test]
    fn channels_last_pooling_equals_max_forward_of_the_planes_bit_for_bit() {
        let mut r = Rng::new(10);
        // channels a multiple of 8 (the AVX2 path) and not; positions per plane below, at
        // and past a group of 8; odd rows and columns; NaNs and ties
        for (c, h, w) in [(16, 14, 14), (8, 5, 7), (24, 3, 9), (5, 4, 6), (32, 28, 28)] {
            let x: Vec<f32> = (0..h * w * c)
                .map(|i| match i % 37 {
                    0 => f32::NAN,
                    _ => r.below(4) as f32 - 1.5,
                })
                .collect();
            let g = two_by_two(c, h, w);
            let planes: Vec<f32> = (0..c)
                .flat_map(|o| (0..h * w).map(move |p| (o, p)))
                .map(|(o, p)| x[p * c + o])
                .collect();
            let mut want = vec![0f32; c * g.out_h * g.out_w];
            max_forward(&g, &planes, &mut want);
            // planes `ld` apart, the values between them untouched
            let (np, ld) = (g.out_h * g.out_w, g.out_h * g.out_w + 3);
            let mut got = vec![7f32; c * ld];
            // SAFETY: c rows of np values ld >= np apart within `got`
            unsafe { max_pool_2x2_channels_last(&x, (h, w, c), got.as_mut_ptr(), ld) };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for o in 0..c {
                let (row, gap) = got[o * ld..(o + 1) * ld].split_at(np);
                assert_eq!(
                    bits(row),
                    bits(&want[o * np..(o + 1) * np]),
                    "{g:?} channel {o}"
                );
                assert!(
                    gap.iter().all(|&v| v == 7.0),
                    "{g:?}: wrote past channel {o}"
                );
            }
        }
    }
}
