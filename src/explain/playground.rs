//! `convnet playground`: a self-contained page in the spirit of CNN Explainer's
//! hyperparameter view. It animates a kernel sliding over the padded (or, for a transposed
//! convolution, zero-inserted) input, shows each output cell's computation and prints the
//! output size with its formula. Its arithmetic is checked against a table of sizes that the
//! engine's own layers compute, embedded in the page.

use crate::error::Result;
use crate::nn::{Activation, Conv, ConvKind, Layer};
use crate::ops::{PadMode, Padding};
use crate::rng::Rng;

/// One case of the engine's table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EngineCase {
    /// `conv` or `transposed`.
    pub mode: &'static str,
    pub dims: usize,
    pub n: usize,
    pub k: usize,
    pub s: usize,
    pub d: usize,
    /// `valid`, `same`, `causal` or `explicit`.
    pub pad: &'static str,
    pub p: usize,
    pub op: usize,
    /// The output size along each axis, or `None` where the engine refuses the settings.
    pub out: Option<usize>,
}

/// What the engine's convolution layer gives for one setting.
pub fn engine_out(c: &EngineCase) -> Option<usize> {
    let kind = match (c.mode, c.dims) {
        ("conv", 1) => ConvKind::Conv1d,
        ("conv", _) => ConvKind::Conv2d,
        (_, 1) => ConvKind::ConvTranspose1d,
        _ => ConvKind::ConvTranspose2d,
    };
    let padding = match c.pad {
        "valid" => Padding::Valid,
        "same" => Padding::Same,
        "causal" => Padding::Causal,
        _ => Padding::Explicit(vec![(c.p, c.p); c.dims]),
    };
    let layer = Conv::new(
        kind,
        1,
        1,
        vec![c.k; c.dims],
        vec![c.s; c.dims],
        padding,
        vec![c.d; c.dims],
        1,
        PadMode::Zeros,
        vec![if c.mode == "conv" { 0 } else { c.op }; c.dims],
        false,
        Activation::Linear,
        &mut Rng::new(0),
    )
    .ok()?;
    let mut input = vec![1];
    input.extend(vec![c.n; c.dims]);
    layer.infer(&input).ok().map(|i| i.output[1])
}

/// The table: convolutions and transposed convolutions over a grid of sizes, kernels,
/// strides, dilations and paddings.
pub fn engine_cases() -> Vec<EngineCase> {
    let mut v = Vec::new();
    for mode in ["conv", "transposed"] {
        for dims in [1, 2] {
            for n in [1, 5, 8] {
                for k in [1, 2, 3, 5] {
                    for s in [1, 2, 3] {
                        for d in [1, 2] {
                            let pads: &[(&str, usize)] = &[
                                ("valid", 0),
                                ("same", 0),
                                ("causal", 0),
                                ("explicit", 1),
                                ("explicit", 2),
                            ];
                            for &(pad, p) in pads {
                                let ops: &[usize] = if mode == "transposed" && pad != "same" {
                                    &[0, 1]
                                } else {
                                    &[0]
                                };
                                for &op in ops {
                                    let mut c = EngineCase {
                                        mode,
                                        dims,
                                        n,
                                        k,
                                        s,
                                        d,
                                        pad,
                                        p,
                                        op,
                                        out: None,
                                    };
                                    c.out = engine_out(&c);
                                    v.push(c);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    v
}

/// The page, with the engine's table in it.
pub fn playground_html() -> Result<String> {
    let cases = engine_cases();
    let json = serde_json::to_string(&cases).map_err(|e| crate::error::Error::Format {
        path: "playground".into(),
        msg: e.to_string(),
    })?;
    let mut rows = String::new();
    for c in &cases {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            c.mode,
            c.dims,
            c.n,
            c.k,
            c.s,
            c.d,
            if c.pad == "explicit" {
                format!("explicit {}", c.p)
            } else {
                c.pad.to_string()
            },
            c.op,
            c.out.map_or("refused".to_string(), |o| o.to_string())
        ));
    }
    Ok(include_str!("playground.html")
        .replace("/*ENGINE_CASES*/", &json)
        .replace("/*ENGINE_ROWS*/", &rows))
}
