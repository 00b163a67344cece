//! Direct kernels for depthwise convolution (`groups == c_in`, each output channel reads one
//! input channel), where a GEMM lowering would multiply matrices with a single row. Stride 1
//! runs on the wide grid (`super::depthwise_wide`); the loops here take the other strides.

use rayon::prelude::*;

use super::{Conv2dGeom, depthwise_wide};

fn cols(g: &Conv2dGeom, kj: usize) -> (usize, usize) {
    g.valid_cols(kj)
}

fn in_row(g: &Conv2dGeom, oh: usize, ki: usize) -> Option<usize> {
    let ih = (oh * g.stride_h + ki * g.dil_h) as isize - g.pad_t as isize;
    (ih >= 0 && (ih as usize) < g.h).then_some(ih as usize)
}

/// Depthwise forward. Shapes as in [`super::conv::conv2d_forward`].
pub fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    if depthwise_wide::applies(g) {
        depthwise_wide::forward(g, x, w, bias, y)
    } else {
        direct_forward(g, x, w, bias, y)
    }
}

/// [`forward`] by the direct loops (any stride).
pub(super) fn direct_forward(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (m, hw, kk, p) = (g.cout_g(), g.h * g.w, g.k_h * g.k_w, g.positions());
    // the valid output columns of each kernel column, computed once
    let cr: Vec<(usize, usize)> = (0..g.k_w).map(|kj| cols(g, kj)).collect();
    y.par_chunks_mut(p).enumerate().for_each(|(plane, yp)| {
        let (img, o) = (plane / g.c_out, plane % g.c_out);
        let xp = &x[(img * g.c_in + o / m) * hw..][..hw];
        let wk = &w[o * kk..(o + 1) * kk];
        yp.fill(bias.map_or(0.0, |b| b[o]));
        for oh in 0..g.out_h {
            let yrow = &mut yp[oh * g.out_w..(oh + 1) * g.out_w];
            for ki in 0..g.k_h {
                let Some(ih) = in_row(g, oh, ki) else {
                    continue;
                };
                let xrow = &xp[ih * g.w..(ih + 1) * g.w];
                for kj in 0..g.k_w {
                    let wv = wk[ki * g.k_w + kj];
                    let (lo, hi) = cr[kj];
                    let base = kj * g.dil_w;
                    if g.stride_w == 1 && hi > lo {
                        let s0 = lo + base - g.pad_l;
                        for (yv, xv) in yrow[lo..hi].iter_mut().zip(&xrow[s0..s0 + hi - lo]) {
                            *yv += wv * xv;
                        }
                    } else {
                        for ow in lo..hi {
                            yrow[ow] += wv * xrow[ow * g.stride_w + base - g.pad_l];
                        }
                    }
                }
            }
        }
    });
}

/// Depthwise gradient with respect to the input. Shapes as in [`super::conv::conv2d_backward_input`].
pub fn backward_input(g: &Conv2dGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    if depthwise_wide::applies(g) {
        depthwise_wide::backward_input(g, dy, w, dx)
    } else {
        direct_backward_input(g, dy, w, dx)
    }
}

/// [`backward_input`] by the direct loops (any stride).
pub(super) fn direct_backward_input(g: &Conv2dGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (m, hw, kk, p) = (g.cout_g(), g.h * g.w, g.k_h * g.k_w, g.positions());
    // the valid output columns of each kernel column, computed once
    let cr: Vec<(usize, usize)> = (0..g.k_w).map(|kj| cols(g, kj)).collect();
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
        let (img, c) = (plane / g.c_in, plane % g.c_in);
        dxp.fill(0.0);
        for o in c * m..(c + 1) * m {
            let dyp = &dy[(img * g.c_out + o) * p..][..p];
            let wk = &w[o * kk..(o + 1) * kk];
            for oh in 0..g.out_h {
                let dyrow = &dyp[oh * g.out_w..(oh + 1) * g.out_w];
                for ki in 0..g.k_h {
                    let Some(ih) = in_row(g, oh, ki) else {
                        continue;
                    };
                    let dxrow = &mut dxp[ih * g.w..(ih + 1) * g.w];
                    for kj in 0..g.k_w {
                        let wv = wk[ki * g.k_w + kj];
                        let (lo, hi) = cr[kj];
                        let base = kj * g.dil_w;
                        if g.stride_w == 1 && hi > lo {
                            // contiguous on both sides: a loop the compiler vectorises
                            let s0 = lo + base - g.pad_l;
                            for (dxv, dyv) in dxrow[s0..s0 + hi - lo].iter_mut().zip(&dyrow[lo..hi])
                            {
                                *dxv += wv * dyv;
                            }
                        } else {
                            for ow in lo..hi {
                                dxrow[ow * g.stride_w + base - g.pad_l] += wv * dyrow[ow];
                            }
                        }
                    }
                }
            }
        }
    });
}

/// `sum(a[i] * b[i])` over eight interleaved partial sums, added in a fixed order: the same
/// bits on every run, and a loop the compiler vectorises.
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Depthwise gradient with respect to the weight (`dw` fully overwritten).
pub fn backward_weight(g: &Conv2dGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    if depthwise_wide::applies(g) {
        depthwise_wide::backward_weight(g, x, dy, dw)
    } else {
        direct_backward_weight(g, x, dy, dw)
    }
}

/// [`backward_weight`] by the direct loops (any stride).
pub(super) fn direct_backward_weight(g: &Conv2dGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (m, hw, kk, p) = (g.cout_g(), g.h * g.w, g.k_h * g.k_w, g.positions());
    // the valid output columns of each kernel column, computed once
    let cr: Vec<(usize, usize)> = (0..g.k_w).map(|kj| cols(g, kj)).collect();
    dw.par_chunks_mut(kk).enumerate().for_each(|(o, dwk)| {
        let mut acc = vec![0f64; kk];
        for img in 0..g.n {
            let xp = &x[(img * g.c_in + o / m) * hw..][..hw];
            let dyp = &dy[(img * g.c_out + o) * p..][..p];
            for oh in 0..g.out_h {
                let dyrow = &dyp[oh * g.out_w..(oh + 1) * g.out_w];
                for ki in 0..g.k_h {
                    let Some(ih) = in_row(g, oh, ki) else {
                        continue;
                    };
                    let xrow = &xp[ih * g.w..(ih + 1) * g.w];
                    for kj in 0..g.k_w {
                        let (lo, hi) = cr[kj];
                        let base = kj * g.dil_w;
                        let s = if g.stride_w == 1 && hi > lo {
                            let s0 = lo + base - g.pad_l;
                            dot8(&dyrow[lo..hi], &xrow[s0..s0 + hi - lo])
                        } else {
                            let mut s = 0f32;
                            for ow in lo..hi {
                                s += dyrow[ow] * xrow[ow * g.stride_w + base - g.pad_l];
                            }
                            s
                        };
                        acc[ki * g.k_w + kj] += s as f64;
                    }
                }
            }
        }
        for (d, a) in dwk.iter_mut().zip(acc) {
            *d = a as f32;
        }
    });
}
