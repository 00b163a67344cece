//! Explaining a model: the summary table behind `convnet summary` (each layer's output shape
//! with its arithmetic, parameters, FLOPs and receptive field).

pub mod playground;
pub mod report;

use crate::error::Result;
use crate::nn::{LayerReport, Sequential, SizeDependence, fmt_shape};

/// A model's summary.
#[derive(Clone, Debug)]
pub struct Summary {
    pub input: Vec<usize>,
    pub layers: Vec<LayerReport>,
    /// Trainable parameters.
    pub total_params: usize,
    /// Non-trainable values (batch-norm running statistics), as Keras counts them.
    pub non_trainable: usize,
    pub total_flops: u64,
    /// The model's receptive field (one output position), e.g. `31` or `all`.
    pub receptive_field: String,
    /// Things a person should know, such as a receptive field shorter than the input.
    pub warnings: Vec<String>,
    /// Per input axis: left open (`"any"`); shapes are shown at the nominal size.
    pub any_size: Vec<bool>,
    /// Whether the model takes inputs of other sizes, and if not, which layer fixes the size.
    pub size_dependence: SizeDependence,
    /// For series of open length: how series of unequal length batch (padded and masked, or
    /// one length at a time and why; see [`crate::nn::mask`]).
    pub unequal_lengths: Option<String>,
}

/// A spatial size as a function of the input's open size `sym` (`H/4`, `2W`, `L - 2`), from
/// the nominal input size `n`, the output size `out` and the jump between outputs.
pub fn symbolic_size(sym: &str, n: usize, out: usize, jump: f64) -> String {
    if jump <= 0.0 {
        return out.to_string();
    }
    let (base, scaled) = if (jump - 1.0).abs() < 1e-9 {
        (sym.to_string(), n as f64)
    } else if jump > 1.0 && jump.fract() == 0.0 {
        (format!("{sym}/{jump}"), n as f64 / jump)
    } else if jump < 1.0 && (1.0 / jump).fract().abs() < 1e-9 {
        (format!("{}{sym}", (1.0 / jump).round()), n as f64 / jump)
    } else {
        return format!("~{out}");
    };
    let c = out as f64 - scaled;
    if c.abs() < 1e-9 {
        base
    } else if c.fract() == 0.0 {
        format!("{base} {} {}", if c > 0.0 { "+" } else { "-" }, c.abs())
    } else {
        format!("~{base}")
    }
}

impl Summary {
    /// A row's output shape, with open input sizes as symbols (`(32, H/2, W/2)`).
    pub fn shape_of(&self, l: &LayerReport) -> String {
        let open = self.any_size.iter().skip(1).any(|&a| a);
        if !open || l.output_shape.len() != self.input.len() {
            return fmt_shape(&l.output_shape);
        }
        let syms: &[&str] = if self.input.len() == 2 {
            &["L"]
        } else {
            &["H", "W"]
        };
        let mut v = vec![l.output_shape[0].to_string()];
        for i in 1..l.output_shape.len() {
            v.push(if self.any_size[i] {
                symbolic_size(
                    syms[i - 1],
                    self.input[i],
                    l.output_shape[i],
                    l.jump.get(i - 1).copied().unwrap_or(1.0),
                )
            } else {
                l.output_shape[i].to_string()
            });
        }
        format!("({})", v.join(", "))
    }

    /// One line on input sizes: whether other sizes are accepted, and what fixes the size.
    pub fn size_line(&self) -> String {
        let what = if self.input.len() == 2 {
            "length"
        } else {
            "size"
        };
        let open = if self.any_size.contains(&true) {
            format!(
                " (the input's {what} is open: shapes are shown at {})",
                fmt_shape(&self.input)
            )
        } else {
            format!(
                " (the spec fixes the input at {}; declare a size \"any\" to feed others)",
                fmt_shape(&self.input)
            )
        };
        let line = match &self.size_dependence {
            SizeDependence::Independent => {
                format!("{what}-independent: any input {what} gives the same output shape{open}")
            }
            SizeDependence::Follows => {
                format!("takes any input {what}; the output's {what} follows the input's{open}")
            }
            SizeDependence::Fixed { layer, why } => format!(
                "fixed input {what}: {layer} fixes it ({why}); global pooling or a 1x1 convolution head instead of flatten + dense would free it"
            ),
        };
        match &self.unequal_lengths {
            Some(how) => format!("{line}; {how}"),
            None => line,
        }
    }
}

/// Summarise a model.
pub fn summarize(model: &Sequential) -> Result<Summary> {
    let layers = model.report()?;
    let rf = model.receptive_field();
    let mut warnings = Vec::new();
    let spatial = model.input.get(1..).unwrap_or(&[]);
    if !rf.global {
        for (i, (&n, &r)) in spatial.iter().zip(&rf.size).enumerate() {
            if r < n as f64 {
                let axis = match (spatial.len(), i) {
                    (1, _) => "input window",
                    (_, 0) => "input height",
                    _ => "input width",
                };
                warnings.push(format!(
                    "the receptive field ({}) is shorter than the {axis} ({n}): each output sees only {} of the {n} positions; add layers, dilations or a larger kernel to see them all",
                    rf.describe(),
                    r
                ));
            }
        }
    }
    let top = layers.iter().filter(|l| l.depth == 0);
    Ok(Summary {
        input: model.input.clone(),
        total_params: top.clone().fold(0, |a, l| a.saturating_add(l.params)),
        non_trainable: top.clone().fold(0, |a, l| a.saturating_add(l.buffers)),
        total_flops: top.fold(0, |a, l| a.saturating_add(l.flops)),
        receptive_field: rf.describe(),
        warnings,
        layers,
        any_size: model.any_size.clone(),
        size_dependence: model.size_dependence(),
        unequal_lengths: (model.input.len() == 2 && model.any_size.get(1) == Some(&true)).then(
            || match crate::nn::mask::support(model) {
                Ok(()) => {
                    "series of unequal length train in batches padded to their longest and masked"
                        .into()
                }
                Err(why) => format!("series of unequal length train one length per batch ({why})"),
            },
        ),
    })
}

/// A receptive field as whole input positions per axis; `null` once it covers the input.
fn rf_numbers(size: &[f64], global: bool) -> serde_json::Value {
    if global {
        serde_json::Value::Null
    } else {
        serde_json::json!(size.iter().map(|v| v.round() as u64).collect::<Vec<_>>())
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The rows of a report with each block's row before its parts (the report lists the parts
/// first, in the order they run), as torchinfo nests them.
fn blocks_first(rows: &[LayerReport]) -> Vec<&LayerReport> {
    // `rows` at one level: each row of the shallowest depth comes after its parts
    fn order<'a>(rows: &'a [LayerReport], out: &mut Vec<&'a LayerReport>) {
        let depth = rows.iter().map(|r| r.depth).min().unwrap_or(0);
        let mut start = 0;
        for (i, r) in rows.iter().enumerate() {
            if r.depth == depth {
                out.push(r);
                order(&rows[start..i], out);
                start = i + 1;
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    order(rows, &mut out);
    out
}

/// The name of the block a row belongs to (`layers.2` for `layers.2.blocks.0`), if any.
fn parent_of<'a>(row: &LayerReport, rows: &'a [LayerReport]) -> Option<&'a str> {
    rows.iter()
        .filter(|p| p.depth + 1 == row.depth && row.name.starts_with(&format!("{}.", p.name)))
        .map(|p| p.name.as_str())
        .next()
}

/// `1234567` as `1.23M`.
pub fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

impl Summary {
    /// The table as text: one row per layer, its shape arithmetic indented below it.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let w = self
            .layers
            .iter()
            .map(|l| 2 * l.depth + l.name.len())
            .max()
            .unwrap_or(0)
            .max(10);
        s.push_str(&format!(
            "{:<w$} {:<18} {:<16} {:>10} {:>10} {:>10}\n",
            "layer", "type", "output shape", "params", "FLOPs", "recept. f."
        ));
        let input = if self.any_size.iter().skip(1).any(|&a| a) {
            let syms = if self.input.len() == 2 {
                vec!["L"]
            } else {
                vec!["H", "W"]
            };
            let mut v = vec![self.input[0].to_string()];
            for i in 1..self.input.len() {
                v.push(if self.any_size[i] {
                    syms[(i - 1).min(syms.len() - 1)].to_string()
                } else {
                    self.input[i].to_string()
                });
            }
            format!("({})", v.join(", "))
        } else {
            fmt_shape(&self.input)
        };
        s.push_str(&format!("{:<w$} {:<18} {:<16}\n", "input", "", input));
        for l in &self.layers {
            s.push_str(&format!(
                "{:<w$} {:<18} {:<16} {:>10} {:>10} {:>10}\n",
                format!("{}{}", "  ".repeat(l.depth), l.name),
                l.kind,
                self.shape_of(l),
                thousands(l.params as u64),
                human(l.flops),
                l.receptive_field
            ));
            for a in &l.arithmetic {
                s.push_str(&format!("{:<w$}   {a}\n", ""));
            }
        }
        let flops = if self.total_flops == u64::MAX {
            "more than 1.8e19 FLOPs per sample (beyond what 64 bits count)".to_string()
        } else {
            format!(
                "{} FLOPs per sample ({})",
                thousands(self.total_flops),
                human(self.total_flops)
            )
        };
        s.push_str(&format!(
            "total: {} trainable parameters, {} non-trainable, {flops}\n",
            thousands(self.total_params as u64),
            thousands(self.non_trainable as u64)
        ));
        s.push_str(&format!(
            "receptive field of one output: {}\n",
            self.receptive_field
        ));
        s.push_str(&format!("{}\n", self.size_line()));
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s
    }

    /// The same as JSON: `{"layers": [{"name", "type", "output_shape", "params", "flops",
    /// "receptive_field", "arithmetic"}], "total_params", "total_flops", "input_shape"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "input_shape": self.input,
            "layers": blocks_first(&self.layers).into_iter().map(|l| serde_json::json!({
                "name": l.name,
                "depth": l.depth,
                "parent": parent_of(l, &self.layers),
                "type": l.kind,
                "output_shape": l.output_shape,
                "output_shape_symbolic": self.shape_of(l),
                "params": l.params,
                "non_trainable": l.buffers,
                "flops": l.flops,
                "receptive_field": rf_numbers(&l.rf_size, l.rf_global),
                "receptive_field_global": l.rf_global,
                "receptive_field_text": l.receptive_field,
                "jump": l.jump,
                "arithmetic": l.arithmetic,
            })).collect::<Vec<_>>(),
            "total_params": self.total_params,
            "trainable_params": self.total_params,
            "non_trainable_params": self.non_trainable,
            "total_flops": self.total_flops,
            "receptive_field": self.layers.iter().rev().find(|l| l.depth == 0)
                .map_or(serde_json::Value::Null, |l| rf_numbers(&l.rf_size, l.rf_global)),
            "receptive_field_text": self.receptive_field,
            "warnings": self.warnings,
            "any_size": self.any_size,
            "unequal_lengths": self.unequal_lengths,
            "size_independent": self.size_dependence == SizeDependence::Independent,
            "size_fixed_by": match &self.size_dependence {
                SizeDependence::Fixed { layer, .. } => Some(layer.clone()),
                _ => None,
            },
            "size": self.size_line(),
        })
    }
}
