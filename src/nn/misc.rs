//! Layers without parameters: `dropout`, `spatial_dropout`, `flatten`, `activation`, `reshape`,
//! `upsample`.

use super::{Activation, Ctx, Layer, ReceptiveField, ShapeInfo, fmt_shape};
use crate::error::{Result, param_err, shape_err};
use crate::ops;
use crate::tensor::Tensor;

/// Dropout of elements, or of whole channels when `spatial`.
pub struct Dropout {
    pub rate: f32,
    pub spatial: bool,
}

impl Dropout {
    /// Checks that the rate is a probability below 1.
    pub fn new(rate: f32, spatial: bool) -> Result<Dropout> {
        if !(0.0..1.0).contains(&rate) {
            return param_err(
                if spatial {
                    "spatial_dropout"
                } else {
                    "dropout"
                },
                "rate",
                format!("{rate} is not in [0, 1)"),
            );
        }
        Ok(Dropout { rate, spatial })
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        if self.spatial {
            "spatial_dropout"
        } else {
            "dropout"
        }
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        _input: &[usize],
    ) -> Result<String> {
        let _ = g;
        Ok(x.to_string())
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if self.spatial {
            ops::spatial_dropout(x, self.rate, ctx.training, ctx.rng)
        } else {
            ops::dropout(x, self.rate, ctx.training, ctx.rng)
        }
    }
    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        if self.spatial && input.len() < 2 {
            return shape_err(
                "spatial_dropout",
                format!(
                    "drops channels of (channels, positions...) inputs, got {}",
                    fmt_shape(input)
                ),
            );
        }
        Ok(ShapeInfo {
            output: input.to_vec(),
            arithmetic: vec![],
            flops: 0,
        })
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::Dropout(self)
    }
    /// Pointwise (or per channel): the padding's values do not reach valid positions.
    fn takes_mask(&self) -> bool {
        true
    }
    /// The output and the mask (one value per element, or per channel plane).
    fn kept(&self, _input: &[usize], output: &[usize]) -> u64 {
        let mask = if self.spatial {
            output.first().copied().unwrap_or(1) as u64
        } else {
            super::count(output)
        };
        super::count(output).saturating_add(mask)
    }
}

/// Flattens each sample to one axis.
pub struct Flatten;

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::reshape(g, x, &[super::count(input) as usize])
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        if x.rank() < 2 {
            return shape_err(
                "flatten",
                format!("expects a batch, got shape {:?}", x.shape()),
            );
        }
        ops::flatten(x, 1, x.rank() - 1)
    }
    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        let Some(n) = input.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
            return shape_err(
                "flatten",
                format!("{} has too many values", fmt_shape(input)),
            );
        };
        let parts: Vec<String> = input.iter().map(|d| d.to_string()).collect();
        Ok(ShapeInfo {
            output: vec![n],
            arithmetic: vec![format!("{} = {n}", parts.join(" * "))],
            flops: 0,
        })
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::View
    }
}

impl Layer for Activation {
    fn kind(&self) -> &'static str {
        "activation"
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        _input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::activation(g, *self, x)
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        self.apply(x)
    }
    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        Ok(ShapeInfo {
            output: input.to_vec(),
            arithmetic: vec![],
            flops: super::mul(&[super::count(input), self.flops_per_element()]),
        })
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::Activation(*self)
    }
    /// Pointwise: the padding's values do not reach valid positions.
    fn takes_mask(&self) -> bool {
        true
    }
}

/// Reshapes each sample (one dimension may be `None`, inferred).
pub struct Reshape {
    pub target: Vec<Option<usize>>,
}

impl Reshape {
    fn resolve(&self, input: &[usize]) -> Result<Vec<usize>> {
        let product =
            |mut v: std::slice::Iter<'_, usize>| v.try_fold(1usize, |a, &d| a.checked_mul(d));
        // sizes whose product overflows (0 here) match no input
        let n = product(input.iter()).unwrap_or(0);
        let flat: Vec<usize> = self.target.iter().flatten().copied().collect();
        let known = product(flat.iter()).unwrap_or(0);
        let unknown = self.target.iter().filter(|d| d.is_none()).count();
        let desc: Vec<String> = self
            .target
            .iter()
            .map(|d| d.map_or("-1".into(), |v| v.to_string()))
            .collect();
        let fail = || {
            shape_err(
                "reshape",
                format!(
                    "cannot reshape {} ({n} values) to ({})",
                    fmt_shape(input),
                    desc.join(", ")
                ),
            )
        };
        match unknown {
            0 if known == n && n > 0 => Ok(flat),
            1 if known > 0 && n % known == 0 => {
                Ok(self.target.iter().map(|d| d.unwrap_or(n / known)).collect())
            }
            _ => fail(),
        }
    }
}

impl Layer for Reshape {
    fn kind(&self) -> &'static str {
        "reshape"
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<String> {
        let out = self.infer(input)?.output;
        crate::interop::onnx::layers::reshape(g, x, &out)
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        let mut shape = vec![x.shape().first().copied().unwrap_or(0)];
        shape.extend(self.resolve(&x.shape()[1.min(x.rank())..])?);
        ops::reshape(x, &shape)
    }
    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        let out = self.resolve(input)?;
        Ok(ShapeInfo {
            arithmetic: vec![format!("{} -> {}", fmt_shape(input), fmt_shape(&out))],
            output: out,
            flops: 0,
        })
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::View
    }
}

/// Upsampling by integer factors (`upsample`): nearest neighbour or (bi)linear, 1-D or 2-D by
/// the input's rank.
pub struct Upsample {
    /// One factor per spatial axis.
    pub size: Vec<usize>,
    pub mode: ops::UpsampleMode,
}

impl Layer for Upsample {
    fn kind(&self) -> &'static str {
        "upsample"
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        _input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::upsample(self, g, x)
    }

    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        match self.size[..] {
            [s] => ops::upsample1d(x, s, self.mode),
            [a, b] => ops::upsample2d(x, [a, b], self.mode),
            _ => shape_err("upsample", "takes 1 or 2 factors"),
        }
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        super::expect_spatial("upsample", input, self.size.len())?;
        let names = if self.size.len() == 1 {
            vec!["length"]
        } else {
            vec!["height", "width"]
        };
        let mut out = vec![input[0]];
        let mut arithmetic = Vec::new();
        for (i, &s) in self.size.iter().enumerate() {
            let n = input[i + 1];
            out.push(n * s);
            arithmetic.push(format!("{} {n} -> {n} * {s} = {}", names[i], n * s));
        }
        let per = if self.mode == ops::UpsampleMode::Nearest {
            0
        } else {
            3 * (1 << self.size.len())
        };
        Ok(ShapeInfo {
            flops: super::mul(&[super::count(&out), per as u64]),
            output: out,
            arithmetic,
        })
    }

    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        let mut r = rf.clone();
        for (i, &s) in self.size.iter().enumerate().take(r.size.len()) {
            if self.mode == ops::UpsampleMode::Linear && s > 1 {
                // an output blends two neighbouring inputs
                r.size[i] += r.jump[i];
            }
            r.jump[i] /= s as f64;
        }
        r
    }
}
