//! Upsampling layers: transposed convolution with `same` padding (output = input * stride, the
//! exact adjoint of a `same` convolution), every stride/padding combination giving the size the
//! arithmetic promises, and specs whose sizes cannot reach their target failing before training.

use std::path::Path;

use convnet::nn::{Activation, Conv, ConvKind, Ctx, Layer};
use convnet::ops::{PadMode, Padding};
use convnet::spec::Spec;
use convnet::{Rng, Tensor, no_grad};

fn conv(
    kind: ConvKind,
    c_in: usize,
    c_out: usize,
    k: usize,
    s: usize,
    d: usize,
    p: Padding,
) -> Conv {
    let dims = kind.dims();
    Conv::new(
        kind,
        c_in,
        c_out,
        vec![k; dims],
        vec![s; dims],
        p,
        vec![d; dims],
        1,
        PadMode::Zeros,
        vec![0; dims],
        false,
        Activation::Linear,
        &mut Rng::new((k * 100 + s * 10 + d) as u64),
    )
    .unwrap()
}

fn fwd(l: &dyn Layer, x: &Tensor) -> Tensor {
    no_grad(|| {
        l.forward(
            x,
            &mut Ctx {
                training: false,
                rng: &mut Rng::new(0),
            },
        )
    })
    .unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.to_vec()
        .iter()
        .zip(b.to_vec())
        .map(|(&x, y)| x as f64 * y as f64)
        .sum()
}

#[test]
fn transposed_same_is_input_times_stride_and_the_adjoint_of_a_same_convolution() {
    let mut rng = Rng::new(1);
    let mut checked = 0;
    for (kind, tkind) in [
        (ConvKind::Conv1d, ConvKind::ConvTranspose1d),
        (ConvKind::Conv2d, ConvKind::ConvTranspose2d),
    ] {
        for k in 1..=5 {
            for s in 1..=3 {
                for d in 1..=2 {
                    let t = conv(tkind, 3, 2, k, s, d, Padding::Same);
                    let mut c = conv(kind, 2, 3, k, s, d, Padding::Same);
                    // the same weight: (3 in, 2 out) transposed is (3 out, 2 in) forward
                    c.weight = t.weight.clone();
                    for n in 1..=5 {
                        let dims = kind.dims();
                        let spatial = vec![n; dims];
                        let mut shape = vec![3];
                        shape.extend(&spatial);
                        let info = t.infer(&shape).unwrap();
                        let want: Vec<usize> = spatial.iter().map(|v| v * s).collect();
                        assert_eq!(info.output[1..], want[..], "k {k} s {s} d {d} n {n}");
                        let mut xs = vec![2];
                        xs.extend(&shape);
                        let y = Tensor::randn(&xs, &mut rng).unwrap();
                        let ty = fwd(&t, &y);
                        assert_eq!(ty.shape()[2..], want[..]);
                        // <conv(x), y> == <x, conv_transpose(y)>
                        let x = Tensor::randn(ty.shape(), &mut rng).unwrap();
                        let cx = fwd(&c, &x);
                        assert_eq!(cx.shape(), y.shape(), "k {k} s {s} d {d} n {n}");
                        let (a, b) = (dot(&cx, &y), dot(&x, &ty));
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                            "{kind:?} k {k} s {s} d {d} n {n}: {a} vs {b}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 5 * 3 * 2 * 5);
}

fn spec(layers: &str, input: &str) -> convnet::Result<Spec> {
    let text = format!("[model]\ninput = {input}\n{layers}");
    let s = Spec::parse(&text, Path::new("gen.toml"))?;
    s.build_model(&mut Rng::new(0))?;
    Ok(s)
}

fn up(k: usize, s: usize, padding: &str, extra: &str) -> String {
    format!(
        "[[model.layers]]\ntype = \"conv2d_transpose\"\nfilters = 4\nkernel_size = {k}\nstrides = {s}\npadding = {padding}\n{extra}\n"
    )
}

#[test]
fn every_stride_and_padding_gives_the_size_its_arithmetic_promises() {
    // (kernel, stride, padding, output_padding) from 7x7: the size each spec promises
    let mut rng = Rng::new(3);
    for k in 1..=5usize {
        for s in 1..=3usize {
            for (padding, op) in [
                ("\"valid\"".to_string(), 0),
                ("\"same\"".into(), 0),
                ("1".into(), 0),
                ("1".into(), s.saturating_sub(1)),
            ] {
                let extra = if op > 0 {
                    format!("output_padding = {op}")
                } else {
                    String::new()
                };
                let layers = up(k, s, &padding, &extra);
                let want = match padding.as_str() {
                    "\"valid\"" => (7 - 1) * s + k,
                    "\"same\"" => 7 * s,
                    _ => ((7 - 1) * s + k + op).checked_sub(2).unwrap_or(0),
                };
                let m = match spec(&layers, "[2, 7, 7]") {
                    Ok(sp) => sp.build_model(&mut Rng::new(0)).unwrap(),
                    Err(e) => {
                        assert_eq!(want, 0, "{layers}: {e}");
                        continue;
                    }
                };
                assert_eq!(m.output_shape(), &[4, want, want], "{layers}");
                let x = Tensor::randn(&[1, 2, 7, 7], &mut rng).unwrap();
                let y = m
                    .forward(
                        &x,
                        &mut Ctx {
                            training: false,
                            rng: &mut rng,
                        },
                    )
                    .unwrap();
                assert_eq!(y.shape(), &[1, 4, want, want], "{layers}");
            }
        }
    }
}

#[test]
fn a_generator_whose_sizes_cannot_reach_the_target_fails_with_the_arithmetic() {
    // dense -> 7x7 -> 14x14 -> 28x28 works; a 3x3 kernel with padding 0 at stride 2 overshoots
    let head = "[[model.layers]]\ntype = \"dense\"\nunits = 196\n[[model.layers]]\ntype = \"reshape\"\ntarget_shape = [4, 7, 7]\n";
    let good = format!(
        "{head}{}{}",
        up(4, 2, "1", ""),
        up(4, 2, "1", "").replace("filters = 4", "filters = 1")
    );
    let s = spec(&good, "[16]").unwrap();
    assert_eq!(
        s.build_model(&mut Rng::new(0)).unwrap().output_shape(),
        &[1, 28, 28]
    );
    let e = spec(
        &format!("{good}[[model.layers]]\ntype = \"reshape\"\ntarget_shape = [784]\n"),
        "[16]",
    );
    assert!(e.is_ok());
    let bad = format!("{head}{}{}", up(3, 2, "0", ""), up(3, 2, "0", ""));
    let s = spec(
        &format!("{bad}[[model.layers]]\ntype = \"reshape\"\ntarget_shape = [4, 28, 28]\n"),
        "[16]",
    );
    let e = s.unwrap_err().to_string();
    assert!(e.contains("layer 4 (reshape)"), "{e}");
    assert!(e.contains("(4, 31, 31)"), "{e}");
    assert!(
        e.contains("height 15 -> (15 - 1) * 2 - 2 * 0 + 1 * (3 - 1) + 0 + 1 = 31"),
        "{e}"
    );
    // same padding with an output padding of its own is a contradiction
    let e = spec(&up(3, 2, "\"same\"", "output_padding = 1"), "[2, 7, 7]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key `output_padding`") && e.contains("chooses"),
        "{e}"
    );
}
