//! `convnet bench`: times the engine on the performance workloads (the shapes of the
//! performance issue) and prints median milliseconds and GFLOP/s.
//!
//! Each convolution is also timed through a plain lowering (one untiled im2col of the whole
//! image and one GEMM per image, parallel over images) as the floor that no op may fall below.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use convnet::kernels::conv::Conv2dGeom;
use convnet::kernels::gemm::{MatRef, sgemm_par};
use convnet::ops::{
    self, Conv1dConfig, Conv2dConfig, ConvTranspose2dConfig, Padding, Pool2dConfig,
};
use convnet::{Rng, Tensor, no_grad};
impl Row {
    /// A timed workload of `flops` floating-point operations (if known), beside its floor.
    fn new(name: &str, median_ms: f64, flops: Option<f64>, baseline_ms: Option<f64>) -> Row {
        Row {
            name: name.into(),
            median_ms,
            gflops: flops.map(|f| f / median_ms / 1e6),
            baseline_ms,
            samples_per_s: None,
        }
    }
}

struct Row {
    name: String,
    median_ms: f64,
    gflops: Option<f64>,
    baseline_ms: Option<f64>,
    samples_per_s: Option<f64>,
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

/// The floor every convolution is held to: an untiled im2col of a whole image and group, one
/// GEMM, and col2im, parallel over images only.
mod plain {
    use convnet::kernels::conv::Conv2dGeom;
    use convnet::kernels::gemm::{MatRef, sgemm};
    use rayon::prelude::*;

    fn tap(g: &Conv2dGeom, p: usize, ki: usize, kj: usize) -> Option<usize> {
        let (oh, ow) = (p / g.out_w, p % g.out_w);
        let ih = (oh * g.stride_h + ki * g.dil_h) as isize - g.pad_t as isize;
        let iw = (ow * g.stride_w + kj * g.dil_w) as isize - g.pad_l as isize;
        (ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w)
            .then(|| ih as usize * g.w + iw as usize)
    }

    fn im2col(g: &Conv2dGeom, x: &[f32], col: &mut [f32]) {
        let (p_all, hw) = (g.positions(), g.h * g.w);
        for c in 0..g.cin_g() {
            for ki in 0..g.k_h {
                for kj in 0..g.k_w {
                    let r = (c * g.k_h + ki) * g.k_w + kj;
                    for p in 0..p_all {
                        col[r * p_all + p] = tap(g, p, ki, kj).map_or(0.0, |i| x[c * hw + i]);
                    }
                }
            }
        }
    }

    fn col2im(g: &Conv2dGeom, col: &[f32], dx: &mut [f32]) {
        let (p_all, hw) = (g.positions(), g.h * g.w);
        for c in 0..g.cin_g() {
            for ki in 0..g.k_h {
                for kj in 0..g.k_w {
                    let r = (c * g.k_h + ki) * g.k_w + kj;
                    for p in 0..p_all {
                        if let Some(i) = tap(g, p, ki, kj) {
                            dx[c * hw + i] += col[r * p_all + p];
                        }
                    }
                }
            }
        }
    }

    pub fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (p, kd, cog, hw) = (g.positions(), g.kdim(), g.cout_g(), g.h * g.w);
        let mut y = vec![0f32; g.n * g.c_out * p];
        y.par_chunks_mut(g.c_out * p)
            .enumerate()
            .for_each(|(img, yi)| {
                let mut col = vec![0f32; kd * p];
                for grp in 0..g.groups {
                    im2col(g, &x[(img * g.c_in + grp * g.cin_g()) * hw..], &mut col);
                    let wg = MatRef::rm(&w[grp * cog * kd..], kd);
                    sgemm(
                        cog,
                        kd,
                        p,
                        wg,
                        MatRef::rm(&col, p),
                        0.0,
                        &mut yi[grp * cog * p..],
                        p,
                    );
                }
            });
        y
    }

    /// Input gradient: `W^T dY`, then col2im.
    pub fn backward_input(g: &Conv2dGeom, dy: &[f32], w: &[f32]) -> Vec<f32> {
        let (p, kd, cog, hw) = (g.positions(), g.kdim(), g.cout_g(), g.h * g.w);
        let mut dx = vec![0f32; g.n * g.c_in * hw];
        dx.par_chunks_mut(g.c_in * hw)
            .enumerate()
            .for_each(|(img, dxi)| {
                let mut col = vec![0f32; kd * p];
                for grp in 0..g.groups {
                    let wt = MatRef::rm_t(&w[grp * cog * kd..], kd);
                    let dyg = MatRef::rm(&dy[(img * g.c_out + grp * cog) * p..], p);
                    sgemm(kd, cog, p, wt, dyg, 0.0, &mut col, p);
                    col2im(g, &col, &mut dxi[grp * g.cin_g() * hw..]);
                }
            });
        dx
    }

    /// Weight gradient: `dY col(x)^T`, one partial per image, summed.
    pub fn backward_weight(g: &Conv2dGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let (p, kd, cog, hw) = (g.positions(), g.kdim(), g.cout_g(), g.h * g.w);
        let partials: Vec<Vec<f32>> = (0..g.n)
            .into_par_iter()
            .map(|img| {
                let mut col = vec![0f32; kd * p];
                let mut dw = vec![0f32; g.c_out * kd];
                for grp in 0..g.groups {
                    im2col(g, &x[(img * g.c_in + grp * g.cin_g()) * hw..], &mut col);
                    let dyg = MatRef::rm(&dy[(img * g.c_out + grp * cog) * p..], p);
                    sgemm(
                        cog,
                        p,
                        kd,
                        dyg,
                        MatRef::rm_t(&col, p),
                        0.0,
                        &mut dw[grp * cog * kd..],
                        kd,
                    );
                }
                dw
            })
            .collect();
        let mut dw = vec![0f32; g.c_out * kd];
        for part in partials {
            dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        dw
    }
}

fn geom(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    dil: (usize, usize),
    groups: usize,
) -> Conv2dGeom {
    let out_h = (h + 2 * pad.0 - dil.0 * (k.0 - 1) - 1) / stride.0 + 1;
    let out_w = (w + 2 * pad.1 - dil.1 * (k.1 - 1) - 1) / stride.1 + 1;
    Conv2dGeom {
        n,
        c_in: c,
        h,
        w,
        c_out: co,
        k_h: k.0,
        k_w: k.1,
        stride_h: stride.0,
        stride_w: stride.1,
        pad_t: pad.0,
        pad_l: pad.1,
        dil_h: dil.0,
        dil_w: dil.1,
        groups,
        out_h,
        out_w,
    }
}

/// conv2d workload: (n, c_in, h, w, c_out, kernel, stride, padding), and groups.
fn conv2d_rows(
    name: &str,
    s: (usize, usize, usize, usize, usize, usize, usize, usize),
    groups: usize,
    reps: usize,
    rows: &mut Vec<Row>,
) {
    let (n, c, h, w, co, k, st, p) = s;
    let mut rng = Rng::new(1);
    let x = randn(&[n, c, h, w], &mut rng);
    let wt = randn(&[co, c / groups, k, k], &mut rng);
    let cfg = Conv2dConfig::default()
        .with_stride(st)
        .with_pad(p)
        .with_groups(groups);
    let g = geom(n, c, h, w, co, (k, k), (st, st), (p, p), (1, 1), groups);
    let flops = g.flops();
    let fwd = median_ms(reps, || {
        no_grad(|| ops::conv2d(&x, &wt, None, &cfg).expect("valid"));
    });
    let base = median_ms(reps, || {
        plain::forward(&g, &x.data(), &wt.data());
    });
    rows.push(Row::new(
        &format!("{name}.fwd"),
        fwd,
        Some(flops),
        Some(base),
    ));
    let xl = x.clone().requires_grad_();
    let wl = wt.clone().requires_grad_();
    let dy = Tensor::ones(&[n, co, g.out_h, g.out_w]).expect("valid");
    let fb = median_ms(reps, || {
        let y = ops::conv2d(&xl, &wl, None, &cfg).expect("valid");
        y.backward_with_grad(&dy).expect("backward");
        xl.zero_grad();
        wl.zero_grad();
    });
    let base = median_ms(reps, || {
        let y = plain::forward(&g, &x.data(), &wt.data());
        plain::backward_input(&g, &y, &wt.data());
        plain::backward_weight(&g, &x.data(), &y);
    });
    rows.push(Row::new(
        &format!("{name}.fwdbwd"),
        fb,
        Some(3.0 * flops),
        Some(base),
    ));
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
    let geoms: Vec<Conv2dGeom> = (0..10)
        .map(|i| {
            let mut g = geom(
                n,
                c,
                1,
                l + (1 << i),
                c,
                (1, 2),
                (1, 1),
                (0, 0),
                (1, 1 << i),
                1,
            );
            // causal: all the padding on the left
            g.w = l;
            g.pad_l = 1 << i;
            g
        })
        .collect();
    let wd: Vec<Vec<f32>> = ws.iter().map(|w| w.to_vec()).collect();
    let base = median_ms(reps, || {
        let mut h = x.to_vec();
        for (g, w) in geoms.iter().zip(&wd) {
            h = plain::forward(g, &h, w);
        }
    });
    rows.push(Row::new(&"C.fwd", fwd, Some(flops), Some(base)));
    let xl = x.clone().requires_grad_();
    let fb = median_ms(reps, || {
        let y = stack(&xl);
        y.backward_with_grad(&Tensor::ones(y.shape()).expect("valid"))
            .expect("backward");
        xl.zero_grad();
        ws.iter().for_each(|w| w.zero_grad());
    });
    let base = median_ms(reps, || {
        let mut acts = vec![x.to_vec()];
        for (g, w) in geoms.iter().zip(&wd) {
            let next = plain::forward(g, &acts[acts.len() - 1], w);
            acts.push(next);
        }
        let mut dy = vec![1f32; n * c * l];
        for (i, (g, w)) in geoms.iter().zip(&wd).enumerate().rev() {
            plain::backward_weight(g, &acts[i], &dy);
            dy = plain::backward_input(g, &dy, w);
        }
    });
    rows.push(Row::new(&"C.fwdbwd", fb, Some(3.0 * flops), Some(base)));
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
    // The convolution that this one transposes: 14x14 -> 7x7.
    let g = geom(64, 32, 14, 14, 64, (4, 4), (2, 2), (1, 1), (1, 1), 1);
    let base = median_ms(reps, || {
        plain::backward_input(&g, &x.data(), &w.data());
    });
    rows.push(Row::new(&"D.fwd", fwd, Some(flops), Some(base)));
    let (xl, wl) = (x.clone().requires_grad_(), w.clone().requires_grad_());
    let fb = median_ms(reps, || {
        let y = ops::conv_transpose2d(&xl, &wl, None, &cfg).expect("valid");
        y.backward_with_grad(&Tensor::ones(y.shape()).expect("valid"))
            .expect("backward");
        xl.zero_grad();
        wl.zero_grad();
    });
    let base = median_ms(reps, || {
        let y = plain::backward_input(&g, &x.data(), &w.data());
        plain::forward(&g, &y, &w.data());
        plain::backward_weight(&g, &y, &x.data());
    });
    rows.push(Row::new(&"D.fwdbwd", fb, Some(3.0 * flops), Some(base)));
}

fn pool_rows(reps: usize, rows: &mut Vec<Row>) {
    let mut rng = Rng::new(4);
    let x = randn(&[64, 32, 28, 28], &mut rng);
    let cfg = Pool2dConfig::new(2);
    let fwd = median_ms(reps, || {
        no_grad(|| ops::max_pool2d(&x, &cfg).expect("valid"));
    });
    rows.push(Row::new(&"E.maxpool.fwd", fwd, None, None));
    let xl = x.clone().requires_grad_();
    let fb = median_ms(reps, || {
        let y = ops::max_pool2d(&xl, &cfg).expect("valid");
        y.backward_with_grad(&Tensor::ones(y.shape()).expect("valid"))
            .expect("backward");
        xl.zero_grad();
    });
    rows.push(Row::new(&"E.maxpool.fwdbwd", fb, None, None));
    let g = randn(&[64, 256, 7, 7], &mut rng);
    let gap = median_ms(reps, || {
        no_grad(|| ops::global_avg_pool2d(&g).expect("valid"));
    });
    rows.push(Row::new(&"E.gap.fwd", gap, None, None));
}

/// The network F of the performance workloads, as a spec.
const NET_F: &str = r#"
[model]
input = [1, 28, 28]
[[model.layers]]
type = "conv2d"
filters = 32
kernel_size = 3
padding = 1
activation = "relu"
[[model.layers]]
type = "max_pool2d"
pool_size = 2
[[model.layers]]
type = "conv2d"
filters = 64
kernel_size = 3
padding = 1
activation = "relu"
[[model.layers]]
type = "max_pool2d"
pool_size = 2
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dense"
units = 128
activation = "relu"
[[model.layers]]
type = "dropout"
rate = 0.25
[[model.layers]]
type = "dense"
units = 10
"#;

/// F: training steps (batch 128, Adam lr 1e-3; 50 timed steps after 5 warm-up steps) and
/// inference (batch 256). `median_ms` is per step / per batch.
fn net_rows(reps: usize, want: &dyn Fn(&str) -> bool, rows: &mut Vec<Row>) -> Result<()> {
    use convnet::nn::Ctx;
    use convnet::optim::{Optimizer, OptimizerKind};
    let spec = convnet::spec::Spec::parse(NET_F, std::path::Path::new("F.toml"))?;
    let model = spec.build_model(&mut Rng::new(0))?;
    let mut rng = Rng::new(6);
    // on the compiled training plan (as `convnet train` runs it), then eagerly; each its own
    // workload, so that a peak-memory measurement of `--filter F.train` sees the plan alone
    let runs = [("F.train", true), ("F.eager.train", false)];
    if runs.iter().any(|(name, _)| want(name)) {
        let x = randn(&[128, 1, 28, 28], &mut rng);
        let labels: Vec<usize> = (0..128).map(|_| rng.below(10)).collect();
        for (name, compiled) in runs.into_iter().filter(|(name, _)| want(name)) {
            let model = spec.build_model(&mut Rng::new(0))?;
            let params = model.named_params();
            let mut plan = match compiled {
                true => Some(convnet::plan::TrainPlan::compile(
                    &model,
                    &model.input,
                    128,
                )?),
                false => None,
            };
            let mut opt = Optimizer::new(
                OptimizerKind::Adam {
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                },
                0.0,
            )?;
            let ce = |o: &Tensor| ops::cross_entropy(o, &labels, &Default::default());
            let mut step = |rng: &mut Rng| -> Result<()> {
                match &mut plan {
                    Some(p) => {
                        // the loss on the plan, as `convnet train` computes it
                        let options = Default::default();
                        let loss = convnet::plan::PlanLoss::CrossEntropy {
                            targets: &labels,
                            options: &options,
                        };
                        p.train_step(&x.data(), loss, rng)?;
                    }
                    None => {
                        let ctx = &mut Ctx {
                            training: true,
                            rng,
                            lengths: None,
                        };
                        ce(&model.forward(&x, ctx)?)?.backward()?;
                    }
                }
                opt.step(&params, 1e-3)?;
                Ok(())
            };
            for _ in 0..5 {
                step(&mut rng)?;
            }
            let mut times = Vec::new();
            for _ in 0..reps.clamp(1, 3) {
                let t = Instant::now();
                for _ in 0..50 {
                    step(&mut rng)?;
                }
                times.push(t.elapsed().as_secs_f64() * 1e3 / 50.0);
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let ms = times[times.len() / 2];
            rows.push(Row {
                name: name.into(),
                median_ms: ms,
                gflops: None,
                baseline_ms: None,
                samples_per_s: Some(128.0 / ms * 1e3),
            });
        }
    }
    if want("F.infer") {
        // on the compiled plan (compiled once, as a session is), and eagerly for comparison
        let x = randn(&[256, 1, 28, 28], &mut rng);
        let xv = x.to_vec();
        let mut plan = convnet::plan::Plan::compile(&model, &model.input, 256)?;
        let ms = median_ms(reps, || {
            plan.run(&xv).expect("valid");
        });
        rows.push(Row {
            name: "F.infer".into(),
            median_ms: ms,
            gflops: None,
            baseline_ms: None,
            samples_per_s: Some(256.0 / ms * 1e3),
        });
        let ms = median_ms(reps, || {
            no_grad(|| {
                model
                    .forward(
                        &x,
                        &mut Ctx {
                            training: false,
                            rng: &mut Rng::new(0),
                            lengths: None,
                        },
                    )
                    .expect("valid")
            });
        });
        rows.push(Row {
            name: "F.eager.infer".into(),
            median_ms: ms,
            gflops: None,
            baseline_ms: None,
            samples_per_s: Some(256.0 / ms * 1e3),
        });
    }
    Ok(())
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
    rows.push(Row::new(&"gemm", ms, Some(2.0 * (n as f64).powi(3)), None));
}

pub fn run(json: bool, filter: Option<&str>, reps: usize) -> Result<()> {
    let want = |name: &str| filter.is_none_or(|f| name.contains(f));
    // A group of workloads runs when the filter names the group or one of its members.
    let group = |prefix: &str| filter.is_none_or(|f| prefix.contains(f) || f.starts_with(prefix));
    let mut rows = Vec::new();
    let convs = [
        ("B1", (64, 1, 28, 28, 32, 3, 1, 1)),
        ("B2", (64, 32, 14, 14, 64, 3, 1, 1)),
        ("B3", (8, 64, 56, 56, 64, 3, 1, 1)),
        ("B4", (8, 128, 28, 28, 128, 3, 1, 1)),
        ("B5", (32, 64, 32, 32, 64, 1, 1, 0)),
    ];
    for (name, s) in convs {
        if group(name) {
            conv2d_rows(name, s, 1, reps, &mut rows);
        }
    }
    // Depthwise 3x3 (direct kernel), as in a MobileNet block.
    if group("DW") {
        conv2d_rows("DW", (64, 64, 28, 28, 64, 3, 1, 1), 64, reps, &mut rows);
    }
    if group("C.") {
        wavenet_rows(reps, &mut rows);
    }
    if group("D.") {
        transpose_rows(reps, &mut rows);
    }
    if group("E.") {
        pool_rows(reps, &mut rows);
    }
    if group("F.") {
        net_rows(reps, &want, &mut rows)?;
    }
    if group("gemm") {
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
                if let Some(v) = r.samples_per_s {
                    m.insert("samples_per_s".into(), v.into());
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
            "workload", "median ms", "GFLOP/s", "plain lowering ms"
        )?;
        for r in &rows {
            let g = match (r.gflops, r.samples_per_s) {
                (Some(g), _) => format!("{g:.1}"),
                (None, Some(sps)) => format!("{sps:.0}/s"),
                _ => "-".to_string(),
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor must compute the same convolution, or the comparison means nothing.
    #[test]
    fn plain_lowering_computes_the_same_convolution() {
        let mut rng = Rng::new(9);
        let (n, c, h, w, co, groups) = (2, 4, 9, 8, 6, 2);
        let x = randn(&[n, c, h, w], &mut rng);
        let wt = randn(&[co, c / groups, 3, 2], &mut rng);
        let g = geom(n, c, h, w, co, (3, 2), (2, 1), (1, 1), (1, 2), groups);
        let cfg = Conv2dConfig {
            stride: [2, 1],
            padding: Padding::Explicit(vec![(1, 1), (1, 1)]),
            dilation: [1, 2],
            groups,
            ..Default::default()
        };
        let xl = x.clone().requires_grad_();
        let wl = wt.clone().requires_grad_();
        let y = ops::conv2d(&xl, &wl, None, &cfg).unwrap();
        assert_eq!(y.shape(), [n, co, g.out_h, g.out_w]);
        let dy = randn(y.shape(), &mut rng);
        y.backward_with_grad(&dy).unwrap();
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() < 1e-4 * (1.0 + y.abs()))
        };
        assert!(close(
            &plain::forward(&g, &x.data(), &wt.data()),
            &y.to_vec()
        ));
        assert!(close(
            &plain::backward_input(&g, &dy.data(), &wt.data()),
            &xl.grad().unwrap().to_vec()
        ));
        assert!(close(
            &plain::backward_weight(&g, &x.data(), &dy.data()),
            &wl.grad().unwrap().to_vec()
        ));
    }
}
