//! Pooling layers: `max_pool1d/2d`, `avg_pool1d/2d` (own stride, padding, ceil mode) and
//! `global_avg_pool` / `global_max_pool` over every position (1-D or 2-D inputs).

use super::{Ctx, Layer, ReceptiveField, ShapeInfo, fmt_shape};
use crate::error::{Error, Result, param_err, shape_err};
use crate::kernels::pool::pool_out_len;
use crate::ops;
use crate::tensor::Tensor;

/// Max or average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// A windowed pooling layer over 1 or 2 spatial dimensions.
pub struct Pool {
    pub kind: PoolKind,
    pub pool_size: Vec<usize>,
    /// Defaults to the pool size.
    pub stride: Vec<usize>,
    pub padding: Vec<usize>,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl Pool {
    fn dims(&self) -> usize {
        self.pool_size.len()
    }
    fn name(&self) -> &'static str {
        match (self.kind, self.dims()) {
            (PoolKind::Max, 1) => "max_pool1d",
            (PoolKind::Max, _) => "max_pool2d",
            (PoolKind::Avg, 1) => "avg_pool1d",
            (PoolKind::Avg, _) => "avg_pool2d",
        }
    }
}

impl Layer for Pool {
    fn kind(&self) -> &'static str {
        self.name()
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        _input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::pool(self, g, x)
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if self.dims() == 1 {
            // a short series' padding, as its own pooling would see it: zeros for an average
            // (PyTorch's zero padding), below every value for a maximum
            let x = &match self.kind {
                PoolKind::Max => super::mask::max_pool_input(x, ctx)?,
                PoolKind::Avg => super::mask::zero_tail(x, ctx)?,
            };
            let cfg = ops::Pool1dConfig {
                kernel: self.pool_size[0],
                stride: Some(self.stride[0]),
                padding: self.padding[0],
                ceil_mode: self.ceil_mode,
                count_include_pad: self.count_include_pad,
            };
            match self.kind {
                PoolKind::Max => ops::max_pool1d(x, &cfg),
                PoolKind::Avg => ops::avg_pool1d(x, &cfg),
            }
        } else {
            let cfg = ops::Pool2dConfig {
                kernel: [self.pool_size[0], self.pool_size[1]],
                stride: Some([self.stride[0], self.stride[1]]),
                padding: [self.padding[0], self.padding[1]],
                ceil_mode: self.ceil_mode,
                count_include_pad: self.count_include_pad,
            };
            match self.kind {
                PoolKind::Max => ops::max_pool2d(x, &cfg),
                PoolKind::Avg => ops::avg_pool2d(x, &cfg),
            }
        }
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        let op = self.name();
        let d = self.dims();
        super::expect_spatial(op, input, d)?;
        let names = if d == 1 {
            vec!["length"]
        } else {
            vec!["height", "width"]
        };
        let mut out = vec![input[0]];
        let mut arithmetic = Vec::new();
        for i in 0..d {
            let (n, k, s, p) = (
                input[1 + i],
                self.pool_size[i],
                self.stride[i],
                self.padding[i],
            );
            if k == 0 || s == 0 {
                return param_err(
                    op,
                    if k == 0 { "pool_size" } else { "strides" },
                    "must be positive",
                );
            }
            if p > k / 2 {
                return param_err(
                    op,
                    "padding",
                    format!("{p} is more than half the pool size {k}"),
                );
            }
            let o = pool_out_len(n, k, s, p, self.ceil_mode).ok_or_else(|| Error::Param {
                op,
                param: "pool_size",
                msg: format!(
                    "a window of {k} does not fit the {} of {n} (padding {p} each side)",
                    names[i]
                ),
            })?;
            let round = if self.ceil_mode { "ceil" } else { "floor" };
            arithmetic.push(format!(
                "{} {n} -> {round}(({n} + 2 * {p} - {k}) / {s}) + 1 = {o}",
                names[i]
            ));
            out.push(o);
        }
        let (window, outputs) = (super::count(&self.pool_size), super::count(&out));
        Ok(ShapeInfo {
            output: out,
            arithmetic,
            flops: super::mul(&[outputs, window]),
        })
    }

    fn rf_start(&self, _input: &[usize], start: &[f64], jump: &[f64]) -> Vec<f64> {
        start
            .iter()
            .enumerate()
            .map(|(i, &s)| s - self.padding.get(i).copied().unwrap_or(0) as f64 * jump[i])
            .collect()
    }

    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        rf.window(&self.pool_size, &self.stride, &vec![1; self.dims()])
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::Pool(self)
    }
    /// 1-D pools; an average only where its divisor cannot count positions past a series'
    /// end (no `ceil_mode`, and zero padding counted).
    fn takes_mask(&self) -> bool {
        self.dims() == 1
            && (self.kind == PoolKind::Max
                || (!self.ceil_mode && (self.count_include_pad || self.padding[0] == 0)))
    }
}

/// Global average or max pooling: `(channels, *spatial)` -> `(channels)`.
pub struct GlobalPool {
    pub kind: PoolKind,
}

impl Layer for GlobalPool {
    fn kind(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "global_max_pool",
            PoolKind::Avg => "global_avg_pool",
        }
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        _input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::global_pool(self.kind, g, x)
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if x.rank() == 3 {
            if let Some(y) = super::mask::global_pool(self.kind, x, ctx)? {
                return Ok(y);
            }
        }
        match (self.kind, x.rank()) {
            (PoolKind::Avg, 3) => ops::global_avg_pool1d(x),
            (PoolKind::Max, 3) => ops::global_max_pool1d(x),
            (PoolKind::Avg, _) => ops::global_avg_pool2d(x),
            (PoolKind::Max, _) => ops::global_max_pool2d(x),
        }
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        if !(2..=3).contains(&input.len()) || input[1..].contains(&0) {
            return shape_err(
                self.kind(),
                format!(
                    "expects (channels, length) or (channels, height, width) per sample, got {}",
                    fmt_shape(input)
                ),
            );
        }
        let positions = super::count(&input[1..]);
        Ok(ShapeInfo {
            output: vec![input[0]],
            arithmetic: vec![format!(
                "{} -> ({}) over all {positions} positions",
                fmt_shape(input),
                input[0]
            )],
            flops: super::count(input),
        })
    }

    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        ReceptiveField {
            global: true,
            ..rf.clone()
        }
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::GlobalPool(self)
    }
    /// Over each series' own positions.
    fn takes_mask(&self) -> bool {
        true
    }
}
