//! The residual, TCN and WaveNet blocks: receptive fields (against keras-tcn's formula and
//! against where the gradient of an output is non-zero), causality bit for bit, finite-difference
//! gradients of inputs and parameters, parameter names, and spec errors.

use std::path::Path;

use convnet::nn::{Ctx, Sequential};
use convnet::spec::Spec;
use convnet::{Rng, Tensor, no_grad, ops};

fn model(input: &str, layers: &str) -> convnet::Result<Sequential> {
    let text = format!("[model]\ninput = {input}\n{layers}");
    Spec::parse(&text, Path::new("test.toml"))?.build_model(&mut Rng::new(5))
}

fn build(input: &str, layers: &str) -> Sequential {
    model(input, layers).unwrap_or_else(|e| panic!("{e}"))
}

fn run(m: &Sequential, x: &Tensor, training: bool) -> Tensor {
    m.forward(
        x,
        &mut Ctx {
            training,
            rng: &mut Rng::new(1),
            lengths: None,
        },
    )
    .unwrap()
}

/// Positions of the input whose gradient, for `sum(output * r)`, is non-zero.
fn gradient_support(m: &Sequential, x: &Tensor, pick: impl Fn(&Tensor) -> Tensor) -> Vec<usize> {
    let x = x.deep_clone().requires_grad_();
    let y = pick(&run(m, &x, false));
    let r = Tensor::randn(y.shape(), &mut Rng::new(3)).unwrap();
    ops::sum_all(&ops::mul(&y, &r).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let g = x.grad().unwrap().to_vec();
    (0..g.len()).filter(|&i| g[i] != 0.0).collect()
}

fn tcn(k: usize, dilations: &[usize], stacks: usize, extra: &str) -> String {
    format!(
        "[[model.layers]]\ntype = \"tcn\"\nnb_filters = 6\nkernel_size = {k}\ndilations = {dilations:?}\nnb_stacks = {stacks}\nactivation = \"tanh\"\n{extra}\n"
    )
}

#[test]
fn tcn_receptive_field_is_keras_tcns_formula() {
    for k in [2, 3, 5] {
        for dil in [vec![1], vec![1, 2, 4, 8], vec![1, 3, 9]] {
            for stacks in [1, 2] {
                let m = build("[2, 400]", &tcn(k, &dil, stacks, ""));
                let formula = 1 + 2 * (k - 1) * stacks * dil.iter().sum::<usize>();
                assert_eq!(
                    m.receptive_field().size,
                    vec![formula as f64],
                    "k {k} dilations {dil:?} stacks {stacks}"
                );
                let s = convnet::explain::summarize(&m).unwrap();
                assert_eq!(s.receptive_field, formula.to_string());
                assert_eq!(s.warnings.is_empty(), formula >= 400, "{:?}", s.warnings);
            }
        }
    }
}

#[test]
fn the_gradient_of_the_last_output_is_non_zero_exactly_on_the_receptive_field() {
    let len = 80;
    let x = Tensor::randn(&[1, 2, len], &mut Rng::new(9)).unwrap();
    let cases = [
        (tcn(3, &[1, 2, 4], 1, ""), true),
        (tcn(2, &[1, 2, 4, 8], 2, "normalization = \"weight\""), true),
        (tcn(3, &[1, 2], 2, "normalization = \"layer\""), true),
        (tcn(3, &[1, 2, 4], 1, "padding = \"same\""), false),
        (
            "[[model.layers]]\ntype = \"wavenet\"\nresidual_channels = 4\nskip_channels = 5\nkernel_size = 2\nlayers_per_stack = 4\nnb_stacks = 2\n".into(),
            true,
        ),
        (
            "[[model.layers]]\ntype = \"wavenet\"\nresidual_channels = 4\nkernel_size = 3\ndilations = [1, 3, 9]\n".into(),
            true,
        ),
    ];
    for (layers, causal) in cases {
        let m = build(&format!("[2, {len}]"), &layers);
        let rf = m.receptive_field().size[0] as usize;
        assert!(rf < len, "{layers}: receptive field {rf}");
        let support = gradient_support(&m, &x, |y| y.clone());
        // both channels of each position count once
        let mut pos: Vec<usize> = support.iter().map(|i| i % len).collect();
        pos.sort();
        pos.dedup();
        let (lo, hi) = (pos[0], *pos.last().unwrap());
        assert_eq!(pos.len(), hi - lo + 1, "{layers}: holes in {pos:?}");
        assert_eq!(
            pos.len(),
            rf,
            "{layers}: support {lo}..={hi}, receptive field {rf}"
        );
        if causal {
            assert_eq!(hi, len - 1, "{layers}");
        } else {
            // `same`: centred on the middle step keras-tcn returns
            assert_eq!((lo + hi) / 2, len / 2, "{layers}");
        }
    }
}

#[test]
fn receptive_fields_of_strided_dilated_pooled_2d_stacks_match_the_gradient() {
    let layers = r#"
[[model.layers]]
type = "conv2d"
filters = 3
kernel_size = 3
strides = 2
[[model.layers]]
type = "avg_pool2d"
pool_size = 2
[[model.layers]]
type = "conv2d"
filters = 3
kernel_size = [3, 2]
dilation_rate = 2
[[model.layers]]
type = "residual"
[[model.layers.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
padding = "same"
"#;
    let m = build("[1, 64, 64]", layers);
    let rf = m.receptive_field();
    let x = Tensor::randn(&[1, 1, 64, 64], &mut Rng::new(4)).unwrap();
    // one output position in the middle of the last map
    let support = gradient_support(&m, &x, |y| {
        let s = y.shape().to_vec();
        let y = ops::slice(y, 2, s[2] / 2, s[2] / 2 + 1).unwrap();
        ops::slice(&y, 3, s[3] / 2, s[3] / 2 + 1).unwrap()
    });
    let rows: Vec<usize> = support.iter().map(|i| i / 64).collect();
    let cols: Vec<usize> = support.iter().map(|i| i % 64).collect();
    let extent = |v: &[usize]| v.iter().max().unwrap() - v.iter().min().unwrap() + 1;
    assert_eq!(
        vec![extent(&rows) as f64, extent(&cols) as f64],
        rf.size,
        "jump {:?}",
        rf.jump
    );
}

/// Outputs at times <= t, when every input after t changes.
fn prefix_unchanged(m: &Sequential, len: usize, t: usize) -> bool {
    let mut rng = Rng::new(t as u64);
    let a = Tensor::randn(&[2, 3, len], &mut rng).unwrap();
    let mut bv = a.to_vec();
    for (i, v) in bv.iter_mut().enumerate() {
        if i % len > t {
            *v = rng.normal() * 5.0;
        }
    }
    let b = Tensor::from_vec(bv, a.shape()).unwrap();
    let (ya, yb) = no_grad(|| (run(m, &a, false), run(m, &b, false)));
    let l = ya.shape()[2];
    let (da, db) = (ya.to_vec(), yb.to_vec());
    (0..da.len())
        .filter(|i| i % l <= t)
        .all(|i| da[i].to_bits() == db[i].to_bits())
}

#[test]
fn causal_blocks_never_see_the_future_and_same_padding_does() {
    let len = 50;
    let seq = "return_sequences = true";
    let causal = [
        tcn(3, &[1, 2, 4], 1, seq),
        tcn(2, &[1, 2, 4, 8], 2, &format!("{seq}\nnormalization = \"batch\"")),
        tcn(3, &[1, 2], 1, &format!("{seq}\nnormalization = \"weight\"")),
        tcn(3, &[1, 2], 1, &format!("{seq}\nnormalization = \"layer\"")),
        "[[model.layers]]\ntype = \"wavenet\"\nresidual_channels = 4\nlayers_per_stack = 5\nnb_stacks = 2\nreturn_sequences = true\n".into(),
        "[[model.layers]]\ntype = \"conv1d\"\nfilters = 4\nkernel_size = 3\ndilation_rate = 2\npadding = \"causal\"\nactivation = \"relu\"\n[[model.layers]]\ntype = \"residual\"\n[[model.layers.layers]]\ntype = \"conv1d\"\nfilters = 4\nkernel_size = 2\ndilation_rate = 4\npadding = \"causal\"\n".into(),
    ];
    for layers in &causal {
        let m = build(&format!("[3, {len}]"), layers);
        for t in [0, 7, 24, 48] {
            assert!(prefix_unchanged(&m, len, t), "{layers}: t = {t}");
        }
    }
    let same = build(
        &format!("[3, {len}]"),
        &tcn(3, &[1, 2, 4], 1, &format!("{seq}\npadding = \"same\"")),
    );
    assert!(!prefix_unchanged(&same, len, 24));
}

/// Finite differences for the input and a sample of every parameter of `m`.
fn check_gradients(name: &str, m: &Sequential, x: &Tensor) {
    let mut rng = Rng::new(11);
    let xg = x.deep_clone().requires_grad_();
    let y = run(m, &xg, true);
    let r: Vec<f32> = (0..y.numel()).map(|_| rng.normal()).collect();
    let rt = Tensor::from_vec(r.clone(), y.shape()).unwrap();
    for (_, p) in m.named_params() {
        p.zero_grad();
    }
    ops::sum_all(&ops::mul(&y, &rt).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let loss = |x: &Tensor| -> f64 {
        no_grad(|| run(m, x, true))
            .to_vec()
            .iter()
            .zip(&r)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    // batch statistics over 24 positions curve enough that a 1e-2 step is too coarse
    let eps = 3e-3f32;
    let close = |a: f64, n: f64| (a - n).abs() <= 5e-3 + 2e-2 * a.abs().max(n.abs());
    let mut targets: Vec<(String, Tensor)> = m.named_params();
    targets.push(("input".into(), x.clone()));
    let gx = xg.grad().unwrap();
    for (pname, t) in targets {
        let analytic = if pname == "input" {
            gx.to_vec()
        } else {
            t.grad()
                .unwrap_or_else(|| panic!("{name}: {pname} got no gradient"))
                .to_vec()
        };
        let n = t.numel();
        for k in 0..4.min(n) {
            let j = (k * 7919 + 13) % n;
            let orig = t.data()[j];
            t.data_mut()[j] = orig + eps;
            let up = loss(x);
            t.data_mut()[j] = orig - eps;
            let down = loss(x);
            t.data_mut()[j] = orig;
            let numeric = (up - down) / (2.0 * eps as f64);
            assert!(
                close(analytic[j] as f64, numeric),
                "{name}: d/d {pname}[{j}]: analytic {}, numeric {numeric}",
                analytic[j]
            );
        }
    }
}

#[test]
fn block_gradients_match_finite_differences() {
    let x = Tensor::randn(&[2, 3, 12], &mut Rng::new(2)).unwrap();
    let cases = [
        ("tcn weight norm", tcn(2, &[1, 2], 1, "normalization = \"weight\"")),
        ("tcn layer norm", tcn(3, &[1, 2], 1, "normalization = \"layer\"\nreturn_sequences = true")),
        ("tcn batch norm", tcn(2, &[1, 4], 1, "normalization = \"batch\"\nuse_skip_connections = false")),
        (
            "wavenet",
            "[[model.layers]]\ntype = \"wavenet\"\nresidual_channels = 4\nskip_channels = 3\noutput_channels = 2\nlayers_per_stack = 3\nreturn_sequences = true\n".into(),
        ),
        (
            "residual with strided shortcut",
            "[[model.layers]]\ntype = \"residual\"\nactivation = \"tanh\"\n[[model.layers.layers]]\ntype = \"conv1d\"\nfilters = 5\nkernel_size = 3\nstrides = 2\npadding = \"same\"\nactivation = \"tanh\"\n[[model.layers.layers]]\ntype = \"layer_norm\"\nnormalized_shape = [6]\n".into(),
        ),
    ];
    for (name, layers) in cases {
        let m = build("[3, 12]", &layers);
        check_gradients(name, &m, &x);
    }
}

#[test]
fn block_parameters_have_nested_pytorch_style_names_and_round_trip() {
    let m = build(
        "[3, 30]",
        &format!(
            "{}[[model.layers]]\ntype = \"dense\"\nunits = 2\n",
            tcn(2, &[1, 2], 1, "normalization = \"weight\"")
        ),
    );
    let names: Vec<String> = m.state_dict().into_iter().map(|(n, _)| n).collect();
    for want in [
        "layers.0.blocks.0.conv1.weight_g",
        "layers.0.blocks.0.conv1.weight_v",
        "layers.0.blocks.0.conv2.bias",
        "layers.0.blocks.0.shortcut.weight",
        "layers.0.blocks.1.conv1.weight_v",
        "layers.1.weight",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n == "layers.0.blocks.1.shortcut.weight")
    );
    let bn = build("[3, 30]", &tcn(2, &[1], 1, "normalization = \"batch\""));
    let names: Vec<String> = bn.state_dict().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"layers.0.blocks.0.norm2.running_var".to_string()));
    // a second model with other weights takes the first's state and computes the same
    let other = model(
        "[3, 30]",
        &format!(
            "{}[[model.layers]]\ntype = \"dense\"\nunits = 2\n",
            tcn(2, &[1, 2], 1, "normalization = \"weight\"")
        ),
    )
    .unwrap();
    let x = Tensor::randn(&[2, 3, 30], &mut Rng::new(8)).unwrap();
    let state: std::collections::BTreeMap<String, Tensor> = m
        .state_dict()
        .into_iter()
        .map(|(n, t)| (n, t.deep_clone()))
        .collect();
    for (_, t) in other.named_params() {
        t.data_mut().iter_mut().for_each(|v| *v += 0.5);
    }
    other.load_state_dict(&state, "memory").unwrap();
    assert_eq!(run(&m, &x, false).to_vec(), run(&other, &x, false).to_vec());
}

#[test]
fn summary_shows_block_parts_and_warns_about_a_short_receptive_field() {
    let m = build("[1, 100]", &tcn(3, &[1, 2, 4], 1, ""));
    let s = convnet::explain::summarize(&m).unwrap();
    let names: Vec<(&str, usize)> = s
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.depth))
        .collect();
    assert_eq!(
        names,
        [
            ("layers.0.blocks.0", 1),
            ("layers.0.blocks.1", 1),
            ("layers.0.blocks.2", 1),
            ("layers.0", 0)
        ]
    );
    let rfs: Vec<&str> = s
        .layers
        .iter()
        .map(|l| l.receptive_field.as_str())
        .collect();
    assert_eq!(rfs, ["5", "13", "29", "29"]);
    assert_eq!(s.total_params, m.num_params());
    assert_eq!(s.warnings.len(), 1);
    assert!(
        s.warnings[0].contains("(29) is shorter than the input window (100)"),
        "{}",
        s.warnings[0]
    );
    let table = s.to_table();
    assert!(table.contains("1 + 2 * (3 - 1) * 1 * 7 = 29"), "{table}");
}

#[test]
fn block_spec_errors_name_the_layer_and_key() {
    let err = |input: &str, layers: &str| match model(input, layers) {
        Ok(_) => panic!("accepted:\n{layers}"),
        Err(e) => e.to_string(),
    };
    let e = err(
        "[1, 50]",
        "[[model.layers]]\ntype = \"residual\"\n[[model.layers.layers]]\ntype = \"conv1d\"\nfilters = 4\nkernel_size = 5\n",
    );
    assert!(
        e.contains("layer 0 (residual)") && e.contains("no strided 1x1 convolution"),
        "{e}"
    );
    let e = err(
        "[1, 50]",
        "[[model.layers]]\ntype = \"residual\"\n[[model.layers.layers]]\ntype = \"conv1d\"\nfilters = 4\nkernel_size = 0\n",
    );
    assert!(
        e.contains("layer 0 (residual) > layer 0 (conv1d), key `kernel_size`"),
        "{e}"
    );
    let e = err(
        "[1, 50]",
        "[[model.layers]]\ntype = \"residual\"\n[[model.layers.layers]]\ntype = \"conv1d\"\nfilters = 4\nkernel_size = 3\npading = \"same\"\n",
    );
    assert!(
        e.contains("key `pading`") && e.contains("did you mean `padding`"),
        "{e}"
    );
    let e = err("[1, 50]", "[[model.layers]]\ntype = \"residual\"\n");
    assert!(e.contains("key `layers`"), "{e}");
    let e = err("[1, 50]", &tcn(3, &[1, 2], 1, "padding = \"valid\""));
    assert!(
        e.contains("key `padding`") && e.contains("causal, same"),
        "{e}"
    );
    let e = err("[1, 50]", &tcn(3, &[1, 2], 1, "normalization = \"group\""));
    assert!(e.contains("key `normalization`"), "{e}");
    let e = err("[1, 50]", &tcn(3, &[1, 0], 1, ""));
    assert!(e.contains("key `dilations`"), "{e}");
    let e = err("[1, 50]", &tcn(3, &[1, 2], 1, "dropout_rate = 1.5"));
    assert!(e.contains("key `dropout_rate`"), "{e}");
    let e = err("[1, 28, 28]", &tcn(3, &[1, 2], 1, ""));
    assert!(e.contains("(channels, length)"), "{e}");
    let e = err(
        "[1, 50]",
        "[[model.layers]]\ntype = \"wavenet\"\ndilations = [1, 2]\nlayers_per_stack = 3\n",
    );
    assert!(e.contains("key `layers_per_stack`"), "{e}");
    let e = err(
        "[1, 50]",
        "[[model.layers]]\ntype = \"wavenet\"\nskip_channels = 0\n",
    );
    assert!(e.contains("key `skip_channels`"), "{e}");
}

#[test]
fn blocks_build_from_rust_as_from_the_spec() {
    use convnet::nn::{
        Activation, BatchNorm, Conv, ConvKind, Residual, Tcn, TcnConfig, TcnNorm, WaveNet,
        WaveNetConfig,
    };
    use convnet::ops::{PadMode, Padding};
    let mut rng = Rng::new(5);
    let mut m = Sequential::new(vec![2, 40]);
    let conv = Conv::new(
        ConvKind::Conv1d,
        2,
        6,
        vec![3],
        vec![2],
        Padding::Same,
        vec![1],
        1,
        PadMode::Zeros,
        vec![0],
        true,
        Activation::Relu,
        &mut rng,
    )
    .unwrap();
    let body: Vec<Box<dyn convnet::nn::Layer>> = vec![
        Box::new(conv),
        Box::new(BatchNorm::new(6, 0.1, 1e-5).unwrap()),
    ];
    m.push(Box::new(
        Residual::new(body, &[2, 40], Activation::Relu, &mut rng).unwrap(),
    ))
    .unwrap();
    let tcn = TcnConfig {
        nb_filters: 5,
        kernel_size: 2,
        dilations: vec![1, 2],
        norm: TcnNorm::Layer,
        return_sequences: true,
        ..TcnConfig::default()
    };
    m.push(Box::new(Tcn::new(6, tcn, &mut rng).unwrap()))
        .unwrap();
    let wn = WaveNetConfig {
        residual_channels: 4,
        dilations: vec![1, 2, 4],
        output_channels: 3,
        ..WaveNetConfig::default()
    };
    m.push(Box::new(WaveNet::new(5, wn, &mut rng).unwrap()))
        .unwrap();
    assert_eq!(m.output_shape(), &[3]);
    let x = Tensor::randn(&[4, 2, 40], &mut Rng::new(1)).unwrap();
    assert_eq!(run(&m, &x, true).shape(), &[4, 3]);
    let spec = build(
        "[2, 40]",
        r#"
[[model.layers]]
type = "residual"
activation = "relu"
[[model.layers.layers]]
type = "conv1d"
filters = 6
kernel_size = 3
strides = 2
padding = "same"
activation = "relu"
[[model.layers.layers]]
type = "batch_norm"
[[model.layers]]
type = "tcn"
nb_filters = 5
kernel_size = 2
dilations = [1, 2]
normalization = "layer"
return_sequences = true
[[model.layers]]
type = "wavenet"
residual_channels = 4
dilations = [1, 2, 4]
output_channels = 3
"#,
    );
    let names = |m: &Sequential| -> Vec<(String, Vec<usize>)> {
        m.state_dict()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect()
    };
    assert_eq!(names(&m), names(&spec));
}

#[test]
fn the_geometry_places_every_units_field_where_its_gradient_is() {
    // strided, padded (same, explicit, causal), dilated and pooled stacks, 2-D and 1-D
    let cases = [
        (
            "[1, 23, 21]",
            r#"
[[model.layers]]
type = "conv2d"
filters = 2
kernel_size = 3
strides = 2
padding = "same"
[[model.layers]]
type = "avg_pool2d"
pool_size = 2
padding = 1
[[model.layers]]
type = "conv2d"
filters = 2
kernel_size = [3, 2]
dilation_rate = 2
padding = 1
"#,
        ),
        ("[1, 40]", &tcn(2, &[1, 2, 4], 1, "return_sequences = true")),
        (
            "[1, 40]",
            &tcn(3, &[1, 2], 1, "return_sequences = true\npadding = \"same\""),
        ),
        (
            "[1, 40]",
            "[[model.layers]]\ntype = \"wavenet\"\nresidual_channels = 3\nlayers_per_stack = 3\nreturn_sequences = true\n",
        ),
        (
            "[2, 30]",
            "[[model.layers]]\ntype = \"conv1d\"\nfilters = 2\nkernel_size = 4\nstrides = 3\npadding = \"causal\"\n[[model.layers]]\ntype = \"conv1d_transpose\"\nfilters = 2\nkernel_size = 3\nstrides = 2\npadding = 1\n",
        ),
    ];
    for (input, layers) in cases {
        let m = build(input, layers);
        let (rf, start) = m.geometry().last().cloned().unwrap();
        let mut shape = vec![1];
        shape.extend(&m.input);
        let x = Tensor::randn(&shape, &mut Rng::new(6)).unwrap();
        let out = m.output_shape().to_vec();
        let spatial_in = &m.input[1..];
        // every output position along the first axis, the middle of the second
        for u in 0..out[1] {
            let support = gradient_support(&m, &x, |y| {
                let mut t = ops::slice(y, 2, u, u + 1).unwrap();
                if y.rank() == 4 {
                    let w = y.shape()[3];
                    t = ops::slice(&t, 3, w / 2, w / 2 + 1).unwrap();
                }
                t
            });
            let plane: usize = spatial_in.iter().product();
            let rows: Vec<usize> = support
                .iter()
                .map(|i| (i % plane) / spatial_in.get(1).copied().unwrap_or(1))
                .collect();
            let lo = (start[0] + u as f64 * rf.jump[0]).max(0.0).ceil() as usize;
            let hi = ((start[0] + u as f64 * rf.jump[0] + rf.size[0] - 1.0)
                .min(spatial_in[0] as f64 - 1.0))
            .floor() as usize;
            let (mn, mx) = (*rows.iter().min().unwrap(), *rows.iter().max().unwrap());
            assert!(
                mn >= lo && mx <= hi,
                "{layers}\nunit {u}: gradient on rows {mn}..={mx}, geometry {lo}..={hi}"
            );
            // the geometry is tight where the field lies inside the input, and outputs are
            // whole input steps apart (after a transposed convolution, which of its taps meet
            // an input depends on the output's phase: the field is then an upper bound)
            if start[0] + u as f64 * rf.jump[0] >= 0.0
                && start[0] + u as f64 * rf.jump[0] + rf.size[0] <= spatial_in[0] as f64
                && rf.jump[0].fract() == 0.0
            {
                assert_eq!((mn, mx), (lo, hi), "{layers}\nunit {u}");
            }
        }
    }
}
