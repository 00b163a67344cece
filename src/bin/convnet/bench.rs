//! `convnet bench`: times the engine on the performance workloads (the shapes of the
//! performance issue) and prints median milliseconds and GFLOP/s.
//!
//! Each convolution is also timed through a plain lowering (one untiled im2col of the whole
//! image and one GEMM per image, parallel over images) as the floor that no op may fall below.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use convnet::kernels::gemm::{MatRef, sgemm, sgemm_par};
use convnet::ops::{
    self, Conv1dConfig, Conv2dConfig, ConvTranspose2dConfig, Padding, Pool2dConfig,
};
use convnet::{Rng, Tensor, no_grad};
use rayon::prelude::*;

struct Row {
    name: String,
    median_ms: f64,
    gflops: Option<f64>,
    baseline_ms: Option<f64>,
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: first-touch of buffers, thread pool start
    let mut v: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, rng).expect("bench shapes are valid")
}

/// The floor: im2col of a whole image (no tiling), then one GEMM, parallel over images.
#[allow(clippy::too_many_arguments)]
fn plain_lowering(
    x: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    h: usize,
    wd: usize,
    co: usize,
    k: (usize, usize),
    stride: usize,
    pad: (usize, usize),
    dil: usize,
) -> Vec<f32> {
    let (kh, kw) = k;
    let oh = (h + 2 * pad.0 - dil * (kh - 1) - 1) / stride + 1;
    let ow = (wd + 2 * pad.1 - dil * (kw - 1) - 1) / stride + 1;
    let (kd, p) = (c * kh * kw, oh * ow);
    let mut y = vec![0f32; n * co * p];
    y.par_chunks_mut(co * p).enumerate().for_each(|(img, yi)| {
        let mut col = vec![0f32; kd * p];
        for ci in 0..c {
            for ki in 0..kh {
                for kj in 0..kw {
                    let r = (ci * kh + ki) * kw + kj;
                    for o_h in 0..oh {
                        for o_w in 0..ow {
                            let ih = (o_h * stride + ki * dil) as isize - pad.0 as isize;
                            let iw = (o_w * stride + kj * dil) as isize - pad.1 as isize;
                            col[r * p + o_h * ow + o_w] =
                                if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                                    x[((img * c + ci) * h + ih as usize) * wd + iw as usize]
                                } else {
                                    0.0
                                };
                        }
                    }
                }
            }
        }
        sgemm(
            co,
            kd,
            p,
            MatRef::rm(w, kd),
            MatRef::rm(&col, p),
            0.0,
            yi,
            p,
        );
    });
    y
}

/// conv2d workload: (n, c_in, h, w, c_out, kernel, stride, padding).
fn conv2d_rows(
    name: &str,
    s: (usize, usize, usize, usize, usize, usize, usize, usize),
    reps: usize,
    rows: &mut Vec<Row>,
) {
    let (n, c, h, w, co, k, st, p) = s;
    let mut rng = Rng::new(1);
    let x = randn(&[n, c, h, w], &mut rng);
    let wt = randn(&[co, c, k, k], &mut rng);
    let cfg = Conv2dConfig::default().with_stride(st).with_pad(p);
    let y = ops::conv2d(&x, &wt, None, &cfg).expect("valid");
    let flops = 2.0 * (n * co * y.shape()[2] * y.shape()[3] * c * k * k) as f64;
    let fwd = median_ms(reps, || {
        no_grad(|| ops::conv2d(&x, &wt, None, &cfg).expect("valid"));
    });
    let base = median_ms(reps, || {
        plain_lowering(&x.data(), &wt.data(), n, c, h, w, co, (k, k), st, (p, p), 1);
    });
    rows.push(Row {
        name: format!("{name}.fwd"),
        median_ms: fwd,
        gflops: Some(flops / fwd / 1e6),
        baseline_ms: Some(base),
    });
    let xl = x.clone().requires_grad_();
    let wl = wt.clone().requires_grad_();
    let g = Tensor::ones(y.shape()).expect("valid");
    let fb = median_ms(reps, || {
        let y = ops::conv2d(&xl, &wl, None, &cfg).expect("valid");
        y.backward_with_grad(&g).expect("backward");
        xl.zero_grad();
        wl.zero_grad();
    });
    rows.push(Row {
        name: format!("{name}.fwdbwd"),
        median_ms: fb,
        gflops: Some(3.0 * flops / fb / 1e6),
        baseline_ms: None,
    });
}

/// The WaveNet-like causal stack: N=16, 32 channels, length 2048, kernel 2, dilations 1..512.
fn wavenet_rows(reps: usize, rows: &mut Vec<Row>) {
    let mut rng = Rng::new(2);
    let (n, c, l) = (16, 32, 2048);
    let x = randn(&[n, c, l], &mut rng);
    let ws: Vec<Tensor> = (0..10)
        .map(|_| {
            ops::mul_scalar(&randn(&[c, c, 2], &mut rng), 0.1)
                .expect("valid")
                .requires_grad_()
        })
        .collect();
    let stack = |x: &Tensor| {
        let mut h = x.clone();
        for (i, w) in ws.iter().enumerate() {
            let cfg = Conv1dConfig::default()
                .with_padding(Padding::Causal)
                .with_dilation(1 << i);
            h = ops::conv1d(&h, w, None, &cfg).expect("valid");
        }
        h
    };
    let flops = 10.0 * 2.0 * (n * c * l * c * 2) as f64;
    let fwd = median_ms(reps, || {
        no_grad(|| stack(&x));
    });
    rows.push(Row {
        name: "C.fwd".into(),
        median_ms: fwd,
        gflops: Some(flops / fwd / 1e6),
        baseline_ms: None,
    });
    let xl = x.clone().requires_grad_();
    let fb = median_ms(reps, || {
        let y = stack(&xl);
        y.backward_with_grad(&Tensor::ones(y.shape()).expect("valid"))
            .expect("backward");
        xl.zero_grad();
        ws.iter().for_each(|w| w.zero_grad());
    });
    rows.push(Row {
        name: "C.fwdbwd".into(),
        median_ms: fb,
        gflops: Some(3.0 * flops / fb / 1e6),
        baseline_ms: None,
    });
}

fn transpose_rows(reps: usize, rows: &mut Vec<Row>) {
    let mut rng = Rng::new(3);
    let x = randn(&[64, 64, 7, 7], &mut rng);
    let w = randn(&[64, 32, 4, 4], &mut rng);
    let cfg = ConvTranspose2dConfig::default().with_stride(2).with_pad(1);
    let flops = 2.0 * (64 * 64 * 7 * 7 * 32 * 16) as f64;
    let fwd = median_ms(reps, || {
        no_grad(|| ops::conv_transpose2d(&x, &w, None, &cfg).expect("valid"));
    });
    rows.push(Row {
        name: "D.fwd".into(),
        median_ms: fwd,
        gflops: Some(flops / fwd / 1e6),
        baseline_ms: None,
    });
    let (xl, wl) = (x.clone().requires_grad_(), w.clone().requires_grad_());
    let fb = median_ms(reps, || {
        let y = ops::conv_transpose2d(&xl, &wl, None, &cfg).expect("valid");
        y.backward_with_grad(&Tensor::ones(y.shape()).expect("valid"))
            .expect("backward");
        xl.zero_grad();
        wl.zero_grad();
    });
    rows.push(Row {
        name: "D.fwdbwd".into(),
        median_ms: fb,
        gflops: Some(3.0 * flops / fb / 1e6),
        baseline_ms: None,
    });
}

fn pool_rows(reps: usize, rows: &mut Vec<Row>) {
    let mut rng = Rng::new(4);
    let x = randn(&[64, 32, 28, 28], &mut rng);
    let cfg = Pool2dConfig::new(2);
    let fwd = median_ms(reps, || {
        no_grad(|| ops::max_pool2d(&x, &cfg).expect("valid"));
    });
    rows.push(Row {
        name: "E.maxpool.fwd".into(),
        median_ms: fwd,
        gflops: None,
        baseline_ms: None,
    });
    let xl = x.clone().requires_grad_();
    let fb = median_ms(reps, || {
        let y = ops::max_pool2d(&xl, &cfg).expect("valid");
        y.backward_with_grad(&Tensor::ones(y.shape()).expect("valid"))
            .expect("backward");
        xl.zero_grad();
    });
    rows.push(Row {
        name: "E.maxpool.fwdbwd".into(),
        median_ms: fb,
        gflops: None,
        baseline_ms: None,
    });
    let g = randn(&[64, 256, 7, 7], &mut rng);
    let gap = median_ms(reps, || {
        no_grad(|| ops::global_avg_pool2d(&g).expect("valid"));
    });
    rows.push(Row {
        name: "E.gap.fwd".into(),
        median_ms: gap,
        gflops: None,
        baseline_ms: None,
    });
}

fn gemm_row(reps: usize, rows: &mut Vec<Row>) {
    let n = 2048;
    let mut rng = Rng::new(5);
    let a: Vec<f32> = (0..n * n).map(|_| rng.normal()).collect();
    let b: Vec<f32> = (0..n * n).map(|_| rng.normal()).collect();
    let mut c = vec![0f32; n * n];
    let ms = median_ms(reps.min(5), || {
        sgemm_par(
            n,
            n,
            n,
            MatRef::rm(&a, n),
            MatRef::rm(&b, n),
            0.0,
            &mut c,
            n,
        )
    });
    rows.push(Row {
        name: "gemm".into(),
        median_ms: ms,
        gflops: Some(2.0 * (n as f64).powi(3) / ms / 1e6),
        baseline_ms: None,
    });
}

pub fn run(json: bool, filter: Option<&str>, reps: usize) -> Result<()> {
    let want = |name: &str| filter.is_none_or(|f| name.contains(f));
    let mut rows = Vec::new();
    let convs = [
        ("B1", (64, 1, 28, 28, 32, 3, 1, 1)),
        ("B2", (64, 32, 14, 14, 64, 3, 1, 1)),
        ("B3", (8, 64, 56, 56, 64, 3, 1, 1)),
        ("B4", (8, 128, 28, 28, 128, 3, 1, 1)),
        ("B5", (32, 64, 32, 32, 64, 1, 1, 0)),
    ];
    for (name, s) in convs {
        if want(name) {
            conv2d_rows(name, s, reps, &mut rows);
        }
    }
    if want("C.") {
        wavenet_rows(reps, &mut rows);
    }
    if want("D.") {
        transpose_rows(reps, &mut rows);
    }
    if want("E.") {
        pool_rows(reps, &mut rows);
    }
    if want("gemm") {
        gemm_row(reps, &mut rows);
    }
    rows.retain(|r| want(&r.name));
    let mut out = std::io::stdout().lock();
    if json {
        let obj: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut m = serde_json::Map::new();
                m.insert("median_ms".into(), r.median_ms.into());
                if let Some(g) = r.gflops {
                    m.insert("gflops".into(), g.into());
                }
                if let Some(b) = r.baseline_ms {
                    m.insert("plain_lowering_ms".into(), b.into());
                }
                (r.name.clone(), m.into())
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&obj)?)?;
    } else {
        writeln!(out, "threads: {}", rayon::current_num_threads())?;
        writeln!(
            out,
            "{:<18} {:>11} {:>9} {:>20}",
            "workload", "median ms", "GFLOP/s", "plain im2col+GEMM ms"
        )?;
        for r in &rows {
            let g = r.gflops.map_or("-".to_string(), |g| format!("{g:.1}"));
            let b = r.baseline_ms.map_or("-".to_string(), |b| {
                format!("{b:.2} ({:.2}x)", b / r.median_ms)
            });
            writeln!(
                out,
                "{:<18} {:>11.3} {:>9} {:>20}",
                r.name, r.median_ms, g, b
            )?;
        }
    }
    Ok(())
}
