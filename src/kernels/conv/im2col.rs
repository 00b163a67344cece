//! Lowering a tile of output positions to columns (im2col), optionally straight into the
//! micro-kernel's packed panels, and its adjoint (col2im).

use super::Conv2dGeom;

/// Where tile column `j` of lowered row `r` lives when the tile is stored in panels of `nr`
/// columns (`kd x nr` each, row-major, one after another).
#[inline]
fn panel_at(kd: usize, nr: usize, r: usize, j: usize) -> usize {
    (j / nr) * kd * nr + r * nr + j % nr
}

/// Write `len` values of lowered row `r` from tile column `j` on (a copy of `src`, or zeros),
/// splitting the run where it crosses into the next panel.
fn put_run(
    col: &mut [f32],
    kd: usize,
    nr: usize,
    r: usize,
    j: usize,
    len: usize,
    src: Option<&[f32]>,
) {
    let mut done = 0;
    while done < len {
        let at = panel_at(kd, nr, r, j + done);
        let n = (nr - (j + done) % nr).min(len - done);
        match src {
            Some(s) => col[at..at + n].copy_from_slice(&s[done..done + n]),
            None => col[at..at + n].fill(0.0),
        }
        done += n;
    }
}

/// Fill `col` with the input patches of output positions `p0..p1`, stored in panels of `nr`
/// columns: row `r` of the lowered matrix, tile column `j`, is at [`panel_at`]. With `nr` no
/// less than `p1 - p0` this is the plain row-major `kdim x (p1 - p0)` matrix. Columns of the last
/// panel past the tile are left as they were. `x`: one image's channels of one group,
/// `(cin_g, h, w)`.
pub(crate) fn im2col_tile(
    g: &Conv2dGeom,
    x: &[f32],
    p0: usize,
    p1: usize,
    nr: usize,
    col: &mut [f32],
) {
    let hw = g.h * g.w;
    let kd = g.kdim();
    for c in 0..g.cin_g() {
        let plane = &x[c * hw..(c + 1) * hw];
        for ki in 0..g.k_h {
            for kj in 0..g.k_w {
                let r = (c * g.k_h + ki) * g.k_w + kj;
                let (vlo, vhi) = g.valid_cols(kj);
                let mut p = p0;
                while p < p1 {
                    let oh = p / g.out_w;
                    let ow0 = p % g.out_w;
                    let ow1 = g.out_w.min(ow0 + (p1 - p));
                    let j = p - p0;
                    let ih = (oh * g.stride_h + ki * g.dil_h) as isize - g.pad_t as isize;
                    if ih < 0 || ih >= g.h as isize {
                        put_run(col, kd, nr, r, j, ow1 - ow0, None);
                    } else {
                        let src = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                        let lo = vlo.clamp(ow0, ow1);
                        let hi = vhi.clamp(lo, ow1);
                        put_run(col, kd, nr, r, j, lo - ow0, None);
                        put_run(col, kd, nr, r, j + hi - ow0, ow1 - hi, None);
                        let base = kj * g.dil_w;
                        if g.stride_w == 1 && hi > lo {
                            let s0 = lo + base - g.pad_l;
                            let s = &src[s0..s0 + (hi - lo)];
                            put_run(col, kd, nr, r, j + lo - ow0, hi - lo, Some(s));
                        } else {
                            for ow in lo..hi {
                                col[panel_at(kd, nr, r, j + ow - ow0)] =
                                    src[ow * g.stride_w + base - g.pad_l];
                            }
                        }
                    }
                    p += ow1 - ow0;
                }
            }
        }
    }
}

/// Add the columns of `col` (`kdim x (p1 - p0)`) back onto the image they were taken from:
/// the adjoint of [`im2col_tile`]. `dx`: `(cin_g, h, w)`.
pub(crate) fn col2im_tile(g: &Conv2dGeom, col: &[f32], p0: usize, p1: usize, dx: &mut [f32]) {
    let t = p1 - p0;
    let hw = g.h * g.w;
    for c in 0..g.cin_g() {
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for ki in 0..g.k_h {
            for kj in 0..g.k_w {
                let r = (c * g.k_h + ki) * g.k_w + kj;
                let row = &col[r * t..(r + 1) * t];
                let (vlo, vhi) = g.valid_cols(kj);
                let mut p = p0;
                while p < p1 {
                    let oh = p / g.out_w;
                    let ow0 = p % g.out_w;
                    let ow1 = g.out_w.min(ow0 + (p1 - p));
                    let ih = (oh * g.stride_h + ki * g.dil_h) as isize - g.pad_t as isize;
                    if ih >= 0 && ih < g.h as isize {
                        let dst = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                        let lo = vlo.clamp(ow0, ow1);
                        let hi = vhi.clamp(lo, ow1);
                        let base = kj * g.dil_w;
                        if g.stride_w == 1 && hi > lo {
                            let d0 = lo + base - g.pad_l;
                            let r0 = p - p0 + lo - ow0;
                            for (d, &v) in
                                dst[d0..d0 + hi - lo].iter_mut().zip(&row[r0..r0 + hi - lo])
                            {
                                *d += v;
                            }
                        } else {
                            for ow in lo..hi {
                                dst[ow * g.stride_w + base - g.pad_l] += row[p - p0 + ow - ow0];
                            }
                        }
                    }
                    p += ow1 - ow0;
                }
            }
        }
    }
}
