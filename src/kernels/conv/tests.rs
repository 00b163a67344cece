//! Every path against the reference loops.

use super::geom::valid_range;
use super::*;
use crate::rng::Rng;

fn close(a: &[f32], b: &[f32], what: &str, g: &Conv2dGeom) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
            "{what} [{i}]: {x} vs {y}, {g:?}"
        );
    }
}

/// `matrixmultiply` (None) and every micro-kernel this CPU has.
fn micros() -> Vec<Option<Micro>> {
    std::iter::once(None)
        .chain(Micro::available().into_iter().map(Some))
        .collect()
}

fn random_geom(r: &mut Rng) -> Conv2dGeom {
    loop {
        let groups = [1, 1, 2, 3][r.below(4)];
        let depthwise = r.below(4) == 0;
        let c_in = if depthwise {
            groups * 2
        } else {
            groups * (1 + r.below(3))
        };
        let groups = if depthwise { c_in } else { groups };
        let c_out = groups * (1 + r.below(3));
        let (k_h, k_w) = (1 + r.below(4), 1 + r.below(4));
        let (h, w) = (1 + r.below(9), 1 + r.below(9));
        let (sh, sw) = (1 + r.below(3), 1 + r.below(3));
        let (dh, dw) = (1 + r.below(2), 1 + r.below(3));
        let (pt, pb, pl, pr) = (r.below(3), r.below(3), r.below(3), r.below(3));
        let (Some(out_h), Some(out_w)) = (
            conv_out_len(h, pt + pb, k_h, sh, dh),
            conv_out_len(w, pl + pr, k_w, sw, dw),
        ) else {
            continue;
        };
        return Conv2dGeom {
            n: 1 + r.below(3),
            c_in,
            h,
            w,
            c_out,
            k_h,
            k_w,
            stride_h: sh,
            stride_w: sw,
            pad_t: pt,
            pad_l: pl,
            dil_h: dh,
            dil_w: dw,
            groups,
            out_h,
            out_w,
        };
    }
}

#[test]
fn fast_conv_matches_reference_on_random_geometries() {
    let mut r = Rng::new(11);
    for _ in 0..300 {
        let g = random_geom(&mut r);
        let x: Vec<f32> = (0..g.n * g.c_in * g.h * g.w).map(|_| r.normal()).collect();
        let w: Vec<f32> = (0..g.c_out * g.kdim()).map(|_| r.normal()).collect();
        let b: Vec<f32> = (0..g.c_out).map(|_| r.normal()).collect();
        let dy: Vec<f32> = (0..g.n * g.c_out * g.positions())
            .map(|_| r.normal())
            .collect();
        let want = reference::forward(&g, &x, &w, Some(&b));
        for micro in micros() {
            let mut y = vec![f32::NAN; dy.len()];
            conv2d_forward_with(micro, &g, &x, &w, Some(&b), &mut y);
            close(&y, &want, &format!("forward {micro:?}"), &g);
        }
        let (rdx, rdw) = reference::backward(&g, &x, &w, &dy);
        for micro in micros() {
            let mut dx = vec![f32::NAN; x.len()];
            conv2d_backward_input_with(micro, &g, &dy, &w, &mut dx);
            close(&dx, &rdx, &format!("grad_x {micro:?}"), &g);
        }
        for micro in micros() {
            let mut dw = vec![f32::NAN; w.len()];
            conv2d_backward_weight_with(micro, &g, &x, &dy, &mut dw, None);
            close(&dw, &rdw, &format!("grad_w {micro:?}"), &g);
        }
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; b.len()];
        conv2d_backward_weight(&g, &x, &dy, &mut dw, Some(&mut db));
        close(&dw, &rdw, "grad_w", &g);
        for o in 0..g.c_out {
            let s: f32 = (0..g.n)
                .flat_map(|n| dy[(n * g.c_out + o) * g.positions()..][..g.positions()].iter())
                .sum();
            assert!((db[o] - s).abs() < 1e-4 * (1.0 + s.abs()));
        }
    }
}

#[test]
fn tiled_lowering_matches_reference_when_tiles_split_rows() {
    // kdim large enough that a tile holds fewer positions than the image.
    let g = Conv2dGeom {
        n: 2,
        c_in: 128,
        h: 30,
        w: 29,
        c_out: 5,
        k_h: 3,
        k_w: 3,
        stride_h: 1,
        stride_w: 2,
        pad_t: 1,
        pad_l: 2,
        dil_h: 2,
        dil_w: 1,
        groups: 1,
        out_h: conv_out_len(30, 2, 3, 1, 2).unwrap(),
        out_w: conv_out_len(29, 3, 3, 2, 1).unwrap(),
    };
    assert!(g.tile() < g.positions());
    let mut r = Rng::new(2);
    let x: Vec<f32> = (0..g.n * g.c_in * g.h * g.w).map(|_| r.normal()).collect();
    let w: Vec<f32> = (0..g.c_out * g.kdim()).map(|_| r.normal()).collect();
    let dy: Vec<f32> = (0..g.n * g.c_out * g.positions())
        .map(|_| r.normal())
        .collect();
    let want = reference::forward(&g, &x, &w, None);
    for micro in micros() {
        let mut y = vec![0f32; dy.len()];
        conv2d_forward_with(micro, &g, &x, &w, None, &mut y);
        close(&y, &want, &format!("forward {micro:?}"), &g);
    }
    let (rdx, rdw) = reference::backward(&g, &x, &w, &dy);
    let mut dx = vec![0f32; x.len()];
    conv2d_backward_input(&g, &dy, &w, &mut dx);
    close(&dx, &rdx, "grad_x", &g);
    let mut dw = vec![0f32; w.len()];
    conv2d_backward_weight(&g, &x, &dy, &mut dw, None);
    close(&dw, &rdw, "grad_w", &g);
}

/// Stride-1 geometries of the implicit lowering: in place (no padding, the last panel
/// gathered), padded with wide columns, a single output row, tiles that split rows.
#[test]
fn implicit_lowering_matches_reference() {
    let mut r = Rng::new(3);
    let cases = [
        // (n, c_in, h, w, c_out, k_h, k_w, pad_t, pad_b, pad_l, pad_r, dil_h, dil_w, groups)
        (2, 5, 7, 9, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1),
        (3, 4, 6, 11, 10, 3, 3, 0, 0, 0, 0, 1, 1, 1),
        (2, 3, 1, 50, 9, 1, 3, 0, 0, 4, 0, 1, 2, 1),
        (2, 6, 1, 40, 4, 1, 2, 0, 0, 0, 0, 1, 5, 2),
        (1, 3, 9, 8, 70, 3, 2, 1, 2, 0, 1, 2, 1, 1),
        (2, 8, 30, 33, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1),
        (1, 2, 5, 5, 2, 5, 5, 4, 4, 4, 4, 1, 1, 1),
        // weight gradient: 4 chunks of one image, 64 channels (4 vectors), 18 taps (6 + 6 + 6
        // on AVX-512); a single input channel (9 taps: 8 + 1), 32 channels
        (4, 2, 40, 40, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1),
        (5, 1, 20, 20, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    ];
    for (n, c_in, h, w, c_out, k_h, k_w, pt, pb, pl, pr, dh, dw, groups) in cases {
        let g = Conv2dGeom {
            n,
            c_in,
            h,
            w,
            c_out,
            k_h,
            k_w,
            stride_h: 1,
            stride_w: 1,
            pad_t: pt,
            pad_l: pl,
            dil_h: dh,
            dil_w: dw,
            groups,
            out_h: conv_out_len(h, pt + pb, k_h, 1, dh).unwrap(),
            out_w: conv_out_len(w, pl + pr, k_w, 1, dw).unwrap(),
        };
        assert!(Implicit::of(&g).is_some(), "{g:?}");
        let x: Vec<f32> = (0..g.n * g.c_in * g.h * g.w).map(|_| r.normal()).collect();
        let wt: Vec<f32> = (0..g.c_out * g.kdim()).map(|_| r.normal()).collect();
        let b: Vec<f32> = (0..g.c_out).map(|_| r.normal()).collect();
        let want = reference::forward(&g, &x, &wt, Some(&b));
        let dy: Vec<f32> = (0..want.len()).map(|_| r.normal()).collect();
        let (rdx, rdw) = reference::backward(&g, &x, &wt, &dy);
        for micro in micros() {
            let mut y = vec![f32::NAN; want.len()];
            conv2d_forward_with(micro, &g, &x, &wt, Some(&b), &mut y);
            close(&y, &want, &format!("forward {micro:?}"), &g);
            let mut dx = vec![f32::NAN; x.len()];
            conv2d_backward_input_with(micro, &g, &dy, &wt, &mut dx);
            close(&dx, &rdx, &format!("grad_x {micro:?}"), &g);
            let mut dw = vec![f32::NAN; wt.len()];
            conv2d_backward_weight_with(micro, &g, &x, &dy, &mut dw, None);
            close(&dw, &rdw, &format!("grad_w {micro:?}"), &g);
        }
    }
}

#[test]
fn valid_range_is_exact() {
    for out in 0..6 {
        for stride in 1..4 {
            for offset in 0..5 {
                for pad in 0..4 {
                    for n in 1..6 {
                        let (lo, hi) = valid_range(out, stride, offset, pad, n);
                        for o in 0..out {
                            let i = (o * stride + offset) as isize - pad as isize;
                            let ok = i >= 0 && (i as usize) < n;
                            assert_eq!(
                                ok,
                                o >= lo && o < hi,
                                "{out} {stride} {offset} {pad} {n} {o}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn prepared_forward_with_epilogue_matches_reference_on_smaller_batches() {
    let mut r = Rng::new(12);
    let relu = |v: &mut [f32]| v.iter_mut().for_each(|x| *x = x.max(0.0));
    for _ in 0..200 {
        let g = random_geom(&mut r);
        let w: Vec<f32> = (0..g.c_out * g.kdim()).map(|_| r.normal()).collect();
        let b: Vec<f32> = (0..g.c_out).map(|_| r.normal()).collect();
        for micro in micros() {
            let mut f = ConvForward::with(micro, Conv2dGeom { n: g.n + 2, ..g });
            f.set_weights(&w);
            // the same prepared forward on two batches, the second smaller than the first
            for n in [g.n + 2, g.n] {
                let gn = Conv2dGeom { n, ..g };
                let x: Vec<f32> = (0..n * g.c_in * g.h * g.w).map(|_| r.normal()).collect();
                let mut want = reference::forward(&gn, &x, &w, Some(&b));
                relu(&mut want);
                let mut y = vec![f32::NAN; n * g.c_out * g.positions()];
                f.run(n, &x, Some(&b), &mut y, Some(&relu));
                close(&y, &want, &format!("prepared {micro:?} n={n}"), &gn);
            }
        }
    }
}

#[test]
fn depthwise_wide_grid_matches_direct_loops_and_reference() {
    let mut r = Rng::new(23);
    for case in 0..60 {
        let (mult, c_in) = (1 + r.below(3), 1 + r.below(4));
        let (k_h, k_w) = (1 + r.below(5), 1 + r.below(5));
        let (h, w) = (1 + r.below(40), 1 + r.below(40));
        let (dh, dw) = (1 + r.below(3), 1 + r.below(3));
        let (pt, pb, pl, pr) = (r.below(4), r.below(4), r.below(4), r.below(4));
        let (Some(out_h), Some(out_w)) = (
            conv_out_len(h, pt + pb, k_h, 1, dh),
            conv_out_len(w, pl + pr, k_w, 1, dw),
        ) else {
            continue;
        };
        let g = Conv2dGeom {
            n: 1 + r.below(3),
            c_in,
            h,
            w,
            c_out: c_in * mult,
            k_h,
            k_w,
            stride_h: 1,
            stride_w: 1,
            pad_t: pt,
            pad_l: pl,
            dil_h: dh,
            dil_w: dw,
            groups: c_in,
            out_h,
            out_w,
        };
        let x: Vec<f32> = (0..g.n * g.c_in * h * w).map(|_| r.normal()).collect();
        let wt: Vec<f32> = (0..g.c_out * k_h * k_w).map(|_| r.normal()).collect();
        let b: Vec<f32> = (0..g.c_out).map(|_| r.normal()).collect();
        let dy: Vec<f32> = (0..g.n * g.c_out * g.positions())
            .map(|_| r.normal())
            .collect();
        let what = format!("case {case}");
        // the same additions in the same order as the direct loops: equal values
        let (mut y, mut y_direct) = (vec![f32::NAN; dy.len()], vec![f32::NAN; dy.len()]);
        depthwise_wide::forward(&g, &x, &wt, Some(&b), &mut y);
        depthwise::direct_forward(&g, &x, &wt, Some(&b), &mut y_direct);
        assert_eq!(y, y_direct, "{what}: forward, {g:?}");
        close(&y, &reference::forward(&g, &x, &wt, Some(&b)), &what, &g);
        let (mut dx, mut dx_direct) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
        depthwise_wide::backward_input(&g, &dy, &wt, &mut dx);
        depthwise::direct_backward_input(&g, &dy, &wt, &mut dx_direct);
        assert_eq!(dx, dx_direct, "{what}: input gradient, {g:?}");
        let (rdx, rdw) = reference::backward(&g, &x, &wt, &dy);
        close(&dx, &rdx, &what, &g);
        // the weight gradient sums in another order: close to the reference
        let mut dwt = vec![f32::NAN; wt.len()];
        depthwise_wide::backward_weight(&g, &x, &dy, &mut dwt);
        close(&dwt, &rdw, &what, &g);
    }
}

#[test]
fn channel_vector_kernel_gives_the_micro_kernels_bits() {
    use super::implicit::{ImplicitForward, forward_on};
    let Some(mk) = Micro::best() else {
        return;
    };
    let mut r = Rng::new(31);
    let cases = [
        // (n, c_in, h, w, c_out, k, pad, dil, groups): F's second convolution, short rows
        // split in blocks of every length, padding, dilation, groups, one-row outputs, rows
        // shorter than a block (blocks over two and three rows)
        (3, 32, 14, 14, 64, 3, 1, 1, 1),
        (2, 8, 6, 3, 16, 3, 1, 1, 1),
        (1, 4, 9, 2, 32, 3, 1, 1, 1),
        // F's first convolution (9 taps: only its channels-last bands take the kernel)
        (2, 1, 12, 10, 32, 3, 1, 1, 1),
        (2, 8, 5, 31, 32, 3, 1, 1, 1),
        (2, 12, 9, 9, 64, 5, 2, 2, 2),
        (1, 16, 7, 23, 48, 3, 0, 1, 1),
        (2, 40, 1, 37, 32, 1, 0, 1, 1),
    ];
    for (n, c_in, h, w, c_out, k, pad, dil, groups) in cases {
        let out = |len: usize| conv_out_len(len, 2 * pad, k, 1, dil).unwrap();
        let (k_h, pad_t) = if h == 1 { (1, 0) } else { (k, pad) };
        let g = Conv2dGeom {
            n,
            c_in,
            h,
            w,
            c_out,
            k_h,
            k_w: k,
            stride_h: 1,
            stride_w: 1,
            pad_t,
            pad_l: pad,
            dil_h: dil,
            dil_w: dil,
            groups,
            out_h: if h == 1 { 1 } else { out(h) },
            out_w: out(w),
        };
        let im = Implicit::of(&g).unwrap();
        let f = ImplicitForward::new(mk, &g, im);
        let fits = g.cout_g().is_multiple_of(32) || !mk.is_avx512();
        if fits && g.kdim() >= 32 {
            assert!(f.chanvec(), "the channel-vector kernel should take {g:?}");
        }
        let x: Vec<f32> = (0..g.n * g.c_in * g.h * g.w).map(|_| r.normal()).collect();
        let wt: Vec<f32> = (0..g.c_out * g.kdim()).map(|_| r.normal()).collect();
        let b: Vec<f32> = (0..g.c_out).map(|_| r.normal()).collect();
        let want = reference::forward(&g, &x, &wt, Some(&b));
        let (mut y, mut y_micro) = (vec![f32::NAN; want.len()], vec![f32::NAN; want.len()]);
        forward_on(f, &g, &im, &x, &wt, Some(&b), &mut y);
        let micro = ImplicitForward::new(mk, &g, im).micro_only();
        forward_on(micro, &g, &im, &x, &wt, Some(&b), &mut y_micro);
        assert!(
            y == y_micro,
            "forward differs from the micro-kernel's: {g:?}"
        );
        close(&y, &want, "channel-vector forward", &g);
        // prepared, in bands (the wide rows of the band buffer), and the input gradient
        let mut cf = ConvForward::new(g);
        cf.set_weights(&wt);
        if cf.banded() {
            let banded = std::sync::Mutex::new(vec![f32::NAN; want.len()]);
            let p = g.positions();
            cf.run_banded(n, &x, Some(&b), 1, &|band: Band| {
                let mut out = banded.lock().unwrap();
                for o in 0..g.cout_g() {
                    for r in 0..band.rows {
                        let at = (band.img * g.c_out + band.grp * g.cout_g() + o) * p
                            + (band.oh0 + r) * g.out_w;
                        let src = o * band.chan_stride + r * band.row_stride;
                        out[at..at + g.out_w].copy_from_slice(&band.data[src..src + g.out_w]);
                    }
                }
            });
            assert!(*banded.lock().unwrap() == y, "banded forward: {g:?}");
            // channels last: each position's channels together
            let mut cl = ConvForward::new(g);
            let on = cl.bands_channels_last();
            assert_eq!(on, fits, "channels-last bands for {g:?}");
            cl.set_weights(&wt);
            let banded = std::sync::Mutex::new(vec![f32::NAN; want.len()]);
            if on {
                cl.run_banded(n, &x, Some(&b), 1, &|band: Band| {
                    let mut out = banded.lock().unwrap();
                    assert_eq!((band.chan_stride, band.col_stride), (1, g.cout_g()));
                    for o in 0..g.cout_g() {
                        for r in 0..band.rows {
                            for c in 0..g.out_w {
                                let at = (band.img * g.c_out + band.grp * g.cout_g() + o) * p
                                    + (band.oh0 + r) * g.out_w
                                    + c;
                                out[at] = band.data[r * band.row_stride + c * band.col_stride + o];
                            }
                        }
                    }
                });
                assert!(*banded.lock().unwrap() == y, "channels-last bands: {g:?}");
            }
        }
        let dy: Vec<f32> = (0..want.len()).map(|_| r.normal()).collect();
        let mut dx = vec![f32::NAN; x.len()];
        conv2d_backward_input(&g, &dy, &wt, &mut dx);
        close(
            &dx,
            &reference::backward(&g, &x, &wt, &dy).0,
            "input gradient",
            &g,
        );
    }
}

#[test]
fn strided_input_gradient_by_phases_matches_reference() {
    let mut r = Rng::new(41);
    let mut taken = 0;
    for case in 0..200 {
        let groups = [1, 1, 2][r.below(3)];
        let c_in = groups * (8 + r.below(9));
        let c_out = groups * (1 + r.below(6));
        let (k_h, k_w) = (1 + r.below(5), 1 + r.below(5));
        let (sh, sw) = (1 + r.below(3), 1 + r.below(3));
        let (h, w) = (1 + r.below(14), 1 + r.below(14));
        let (pt, pb, pl, pr) = (r.below(3), r.below(3), r.below(3), r.below(3));
        let (Some(out_h), Some(out_w)) = (
            conv_out_len(h, pt + pb, k_h, sh, 1),
            conv_out_len(w, pl + pr, k_w, sw, 1),
        ) else {
            continue;
        };
        let g = Conv2dGeom {
            n: 1 + r.below(3),
            c_in,
            h,
            w,
            c_out,
            k_h,
            k_w,
            stride_h: sh,
            stride_w: sw,
            pad_t: pt,
            pad_l: pl,
            dil_h: 1,
            dil_w: 1,
            groups,
            out_h,
            out_w,
        };
        let x: Vec<f32> = (0..g.n * c_in * h * w).map(|_| r.normal()).collect();
        let wt: Vec<f32> = (0..c_out * g.kdim()).map(|_| r.normal()).collect();
        let dy: Vec<f32> = (0..g.n * c_out * g.positions())
            .map(|_| r.normal())
            .collect();
        let (rdx, _) = reference::backward(&g, &x, &wt, &dy);
        for mk in Micro::available() {
            let mut dx = vec![f32::NAN; x.len()];
            if phases::backward_input(mk, &g, &dy, &wt, &mut dx) {
                taken += 1;
                close(&dx, &rdx, &format!("case {case}, phases on {mk:?}"), &g);
            }
        }
    }
    // the transposed convolution of the benchmarks (kernel 4, stride 2, padding 1)
    let g = Conv2dGeom {
        n: 2,
        c_in: 16,
        h: 14,
        w: 14,
        c_out: 32,
        k_h: 4,
        k_w: 4,
        stride_h: 2,
        stride_w: 2,
        pad_t: 1,
        pad_l: 1,
        dil_h: 1,
        dil_w: 1,
        groups: 1,
        out_h: 7,
        out_w: 7,
    };
    let dy: Vec<f32> = (0..2 * 32 * 49).map(|_| r.normal()).collect();
    let wt: Vec<f32> = (0..32 * g.kdim()).map(|_| r.normal()).collect();
    let (rdx, _) = reference::backward(&g, &vec![0.0; 2 * 16 * 196], &wt, &dy);
    for mk in Micro::available() {
        let mut dx = vec![f32::NAN; rdx.len()];
        assert!(phases::backward_input(mk, &g, &dy, &wt, &mut dx));
        close(&dx, &rdx, "kernel 4, stride 2", &g);
        taken += 1;
    }
    assert!(
        Micro::available().is_empty() || taken > 20,
        "{taken} geometries by phases"
    );
}
