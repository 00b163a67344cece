//! `convnet demo`: two small learning problems that exercise the engine end to end, with
//! nothing to download: recovering an edge-detection filter from its outputs, and training a
//! conv + pool + dense classifier to tell bar orientations apart.

use std::io::Write;

use anyhow::Result;
use convnet::ops::{self, Conv2dConfig, Padding, Pool2dConfig};
use convnet::optim::{Optimizer, OptimizerKind};
use convnet::{Rng, Tensor, init, no_grad};

/// SGD with momentum (the library's optimizer) over unnamed parameters.
fn sgd(params: &[Tensor], momentum: f32) -> Result<(Optimizer, Vec<(String, Tensor)>)> {
    let opt = Optimizer::new(
        OptimizerKind::Sgd {
            momentum,
            nesterov: false,
            dampening: 0.0,
        },
        0.0,
    )?;
    Ok((
        opt,
        params
            .iter()
            .enumerate()
            .map(|(i, p)| (i.to_string(), p.clone()))
            .collect(),
    ))
}

fn filter_recovery(seed: u64, out: &mut impl Write) -> Result<()> {
    writeln!(out, "1. Recovering a Sobel filter from input/output pairs")?;
    let mut rng = Rng::new(seed);
    let sobel = Tensor::from_vec(vec![-1., 0., 1., -2., 0., 2., -1., 0., 1.], &[1, 1, 3, 3])?;
    let cfg = Conv2dConfig::default().with_padding(Padding::Same);
    let w = init::default_weight(&[1, 1, 3, 3], &mut rng)?.requires_grad_();
    let (mut opt, named) = sgd(std::slice::from_ref(&w), 0.9)?;
    let x0 = Tensor::randn(&[8, 1, 16, 16], &mut rng)?;
    let y0 = ops::conv2d(&x0, &sobel, None, &cfg)?;
    writeln!(
        out,
        "   input {:?} * filter {:?}, padding same -> output {:?} (16 -> ceil(16 / 1) = 16)",
        x0.shape(),
        w.shape(),
        y0.shape()
    )?;
    for step in 0..=150 {
        let x = Tensor::randn(&[8, 1, 16, 16], &mut rng)?;
        let target = no_grad(|| ops::conv2d(&x, &sobel, None, &cfg))?;
        let loss = ops::mse(&ops::conv2d(&x, &w, None, &cfg)?, &target)?;
        if step % 30 == 0 {
            writeln!(out, "   step {step:>3}  mse {:.6}", loss.item()?)?;
        }
        loss.backward()?;
        opt.step(&named, 0.05)?;
    }
    let learned = w.to_vec();
    writeln!(out, "   learned filter          true filter")?;
    for r in 0..3 {
        let l: Vec<String> = learned[r * 3..r * 3 + 3]
            .iter()
            .map(|v| format!("{v:6.3}"))
            .collect();
        let t: Vec<String> = sobel.to_vec()[r * 3..r * 3 + 3]
            .iter()
            .map(|v| format!("{v:4.0}"))
            .collect();
        writeln!(out, "   {}    {}", l.join(" "), t.join(" "))?;
    }
    Ok(())
}

/// A 12x12 image holding a horizontal (0), vertical (1) or diagonal (2) bar plus noise.
fn bar_image(class: usize, rng: &mut Rng) -> Vec<f32> {
    let mut img: Vec<f32> = (0..144).map(|_| 0.3 * rng.normal()).collect();
    let at = 2 + rng.below(8);
    let (start, len) = (rng.below(4), 6 + rng.below(3));
    for k in start..(start + len).min(12) {
        let (r, c) = match class {
            0 => (at, k),
            1 => (k, at),
            _ => (k, (k + at) % 12),
        };
        img[r * 12 + c] += 1.0;
    }
    img
}

fn batch(n: usize, rng: &mut Rng) -> Result<(Tensor, Vec<usize>)> {
    let labels: Vec<usize> = (0..n).map(|_| rng.below(3)).collect();
    let data: Vec<f32> = labels.iter().flat_map(|&c| bar_image(c, rng)).collect();
    Ok((Tensor::from_vec(data, &[n, 1, 12, 12])?, labels))
}

struct Classifier {
    params: Vec<Tensor>,
}

impl Classifier {
    fn new(rng: &mut Rng) -> Result<Self> {
        let shapes: [&[usize]; 3] = [&[8, 1, 3, 3], &[16, 8, 3, 3], &[3, 16]];
        let mut params = Vec::new();
        for s in shapes {
            params.push(init::default_weight(s, rng)?.requires_grad_());
            params.push(init::default_bias(s, s[0], rng)?.requires_grad_());
        }
        Ok(Classifier { params })
    }

    /// conv(1->8, 3, same) - relu - maxpool 2 - conv(8->16, 3, same) - relu - global avg pool - dense(16->3)
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let same = Conv2dConfig::default().with_padding(Padding::Same);
        let h = ops::relu(&ops::conv2d(x, &p[0], Some(&p[1]), &same)?)?;
        let h = ops::max_pool2d(&h, &Pool2dConfig::new(2))?;
        let h = ops::relu(&ops::conv2d(&h, &p[2], Some(&p[3]), &same)?)?;
        let h = ops::global_avg_pool2d(&h)?;
        Ok(ops::linear(&h, &p[4], Some(&p[5]))?)
    }
}

fn classifier(seed: u64, out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "\n2. A conv + pool + dense classifier of bar orientation (horizontal, vertical, diagonal)"
    )?;
    writeln!(
        out,
        "   (n,1,12,12) -conv 3x3 same-> (n,8,12,12) -maxpool 2-> (n,8,6,6) -conv 3x3 same-> (n,16,6,6) -global avg-> (n,16) -dense-> (n,3)"
    )?;
    let mut rng = Rng::new(seed.wrapping_add(1));
    let model = Classifier::new(&mut rng)?;
    let (mut opt, named) = sgd(&model.params, 0.9)?;
    let (test_x, test_y) = batch(600, &mut rng)?;
    let accuracy = |m: &Classifier| -> Result<f32> {
        let logits = no_grad(|| m.forward(&test_x))?;
        let l = logits.to_vec();
        let right = test_y.iter().enumerate().filter(|&(i, &y)| {
            let row = &l[i * 3..i * 3 + 3];
            let best = (0..3)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            best == y
        });
        Ok(right.count() as f32 / test_y.len() as f32)
    };
    writeln!(
        out,
        "   test accuracy before training: {:.1}%",
        100.0 * accuracy(&model)?
    )?;
    for step in 1..=300 {
        let (x, y) = batch(32, &mut rng)?;
        let loss = ops::cross_entropy(&model.forward(&x)?, &y, &Default::default())?;
        if step % 60 == 0 {
            writeln!(out, "   step {step:>3}  cross-entropy {:.4}", loss.item()?)?;
        }
        loss.backward()?;
        opt.step(&named, 0.1)?;
    }
    writeln!(
        out,
        "   test accuracy after 300 steps: {:.1}% on 600 unseen images",
        100.0 * accuracy(&model)?
    )?;
    Ok(())
}

pub fn run(seed: u64) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let t = std::time::Instant::now();
    filter_recovery(seed, &mut out)?;
    classifier(seed, &mut out)?;
    writeln!(out, "\ndone in {:.1} s", t.elapsed().as_secs_f64())?;
    Ok(())
}
