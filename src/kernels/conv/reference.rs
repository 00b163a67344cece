//! Direct loops, obviously correct, that the fast kernels are tested against.
use super::Conv2dGeom;

fn at(g: &Conv2dGeom, oh: usize, ow: usize, ki: usize, kj: usize) -> Option<(usize, usize)> {
    let ih = (oh * g.stride_h + ki * g.dil_h) as isize - g.pad_t as isize;
    let iw = (ow * g.stride_w + kj * g.dil_w) as isize - g.pad_l as isize;
    (ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w)
        .then_some((ih as usize, iw as usize))
}

/// Visit every (image, out channel, in channel, output position, kernel tap) that meets an input pixel.
fn each(g: &Conv2dGeom, mut f: impl FnMut(usize, usize, usize, usize, usize, usize)) {
    let (cig, cog) = (g.cin_g(), g.cout_g());
    for n in 0..g.n {
        for o in 0..g.c_out {
            let grp = o / cog;
            for ci in 0..cig {
                let c = grp * cig + ci;
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        for ki in 0..g.k_h {
                            for kj in 0..g.k_w {
                                if let Some((ih, iw)) = at(g, oh, ow, ki, kj) {
                                    let yi = ((n * g.c_out + o) * g.out_h + oh) * g.out_w + ow;
                                    let xi = ((n * g.c_in + c) * g.h + ih) * g.w + iw;
                                    let wi = ((o * cig + ci) * g.k_h + ki) * g.k_w + kj;
                                    f(n, o, yi, xi, wi, 0);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let p = g.positions();
    let mut y = vec![0f64; g.n * g.c_out * p];
    each(g, |_, _, yi, xi, wi, _| {
        y[yi] += x[xi] as f64 * w[wi] as f64
    });
    let mut out: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    if let Some(b) = b {
        for (i, v) in out.iter_mut().enumerate() {
            *v += b[(i / p) % g.c_out];
        }
    }
    out
}

pub fn backward(g: &Conv2dGeom, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f64; x.len()];
    let mut dw = vec![0f64; w.len()];
    each(g, |_, _, yi, xi, wi, _| {
        dx[xi] += dy[yi] as f64 * w[wi] as f64;
        dw[wi] += dy[yi] as f64 * x[xi] as f64;
    });
    (
        dx.iter().map(|&v| v as f32).collect(),
        dw.iter().map(|&v| v as f32).collect(),
    )
}
