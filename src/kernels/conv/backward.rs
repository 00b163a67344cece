//! A convolution's backward prepared once for its geometry (`g.n` the largest batch), as a
//! compiled training plan keeps one per convolution: the input gradient runs as a prepared
//! forward of the transposed convolution (its padded dY buffer kept), and the weight gradient
//! keeps its padded input, its slab of position-major dY, its chunks' sums and (where a
//! pooling fills it) its wide dY, so that after the first step nothing is allocated or zeroed
//! again. The results are those of [`super::conv2d_backward_input`] and
//! [`super::conv2d_backward_weight`] bit for bit: the same kernels, in the same order.

use super::implicit::{self, Implicit};
use super::wgrad::{self, FillWide, WeightScratch};
use super::{Conv2dGeom, ConvForward};
use crate::kernels::micro::Micro;

/// The backward of one convolution, prepared.
pub struct ConvBackward {
    g: Conv2dGeom,
    /// The input gradient as the forward of the transposed convolution, and the buffer of the
    /// flipped weights (where the eager kernel takes that path).
    input: Option<(ConvForward, Vec<f32>)>,
    /// The weight gradient's lowering and buffers (where the eager kernel takes that path).
    weight: Option<(Micro, Implicit, WeightScratch)>,
}

impl ConvBackward {
    /// Prepared for the fastest micro-kernel of this CPU, as the eager kernels choose it.
    pub fn new(g: Conv2dGeom) -> ConvBackward {
        ConvBackward::with(Micro::best(), g)
    }

    pub(crate) fn with(micro: Option<Micro>, g: Conv2dGeom) -> ConvBackward {
        // the conditions of `conv2d_backward_input_with` and `conv2d_backward_weight_with`
        let input = match (micro, implicit::transposed_as_conv(&g)) {
            (Some(mk), Some((gt, _)))
                if !g.is_depthwise() && !gt.is_depthwise() && g.cin_g() >= mk.mr =>
            {
                Some((
                    ConvForward::with(Some(mk), gt),
                    vec![0.0; g.c_out * g.kdim()],
                ))
            }
            _ => None,
        };
        let weight = match (micro, Implicit::of(&g)) {
            (Some(mk), Some(im)) if Self::implicit_weight(&g) => {
                Some((mk, im, WeightScratch::default()))
            }
            _ => None,
        };
        ConvBackward { g, input, weight }
    }

    /// Whether the weight gradient of `g` runs on the wide dY of the implicit lowering, given
    /// a micro-kernel (where [`ConvBackward::wide_row_stride`] is then `Some`), from the
    /// geometry alone.
    pub(crate) fn implicit_weight(g: &Conv2dGeom) -> bool {
        Implicit::of(g).is_some() && !g.is_depthwise() && !g.is_pointwise()
    }

    /// Values [`ConvBackward::new`] keeps for `g` (a sizing from the geometry alone, for
    /// memory estimates; saturating).
    pub fn buffer_len(g: &Conv2dGeom) -> u64 {
        let input = match implicit::transposed_as_conv(g) {
            Some((gt, _)) if !g.is_depthwise() => {
                ConvForward::buffer_len(&gt).saturating_add(crate::nn::count(&[g.c_out, g.kdim()]))
            }
            _ => 0,
        };
        super::backward_scratch_len(g).saturating_add(input)
    }

    /// Values of the wide dY that [`ConvBackward::weight_filled`] keeps besides
    /// [`ConvBackward::buffer_len`] (saturating; 0 where it does not run).
    pub fn wide_len(g: &Conv2dGeom) -> u64 {
        match Implicit::of(g) {
            Some(im) if Self::implicit_weight(g) => wgrad::wide_len(g, &im),
            _ => 0,
        }
    }

    /// `dx` of the first `n` images from `dy` and the weights `w` (shapes as
    /// [`super::conv2d_backward_input`]).
    pub fn input(&mut self, n: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
        assert!(n <= self.g.n, "ConvBackward: {n} images for {}", self.g.n);
        match &mut self.input {
            Some((fwd, flipped)) => {
                implicit::flip_weights_into(&self.g, w, flipped);
                fwd.set_weights(flipped);
                fwd.run(n, dy, None, dx, None);
            }
            None => super::conv2d_backward_input(&Conv2dGeom { n, ..self.g }, dy, w, dx),
        }
    }

    /// `dw` (and `db`) from the first `n` images of `x` and `dy` (shapes as
    /// [`super::conv2d_backward_weight`]; both overwritten).
    pub fn weight(
        &mut self,
        n: usize,
        (x, dy): (&[f32], &[f32]),
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) {
        assert!(n <= self.g.n, "ConvBackward: {n} images for {}", self.g.n);
        let g = Conv2dGeom { n, ..self.g };
        match &mut self.weight {
            Some((mk, im, scratch)) => {
                if let Some(db) = db {
                    super::bias_grad(&g, dy, db);
                }
                wgrad::backward_weight(*mk, &g, im, (x, dy), dw, scratch);
            }
            None => super::conv2d_backward_weight(&g, x, dy, dw, db),
        }
    }

    /// The row stride of the wide dY that [`ConvBackward::weight_filled`] hands its `fill`,
    /// where the weight gradient runs on it (`None`: it does not, and `weight_filled` would
    /// not run).
    pub(crate) fn wide_row_stride(&self) -> Option<usize> {
        self.weight.as_ref().map(|(_, im, _)| im.row_stride())
    }

    /// `dw` from the first `n` images of `x` and a dY that `fill` writes straight into the
    /// weight gradient's wide buffer (see [`FillWide`]); the bias gradient is the
    /// caller's. Returns false, running nothing, where [`ConvBackward::wide_row_stride`] is
    /// `None`.
    pub(crate) fn weight_filled(
        &mut self,
        n: usize,
        x: &[f32],
        fill: &FillWide,
        dw: &mut [f32],
    ) -> bool {
        assert!(n <= self.g.n, "ConvBackward: {n} images for {}", self.g.n);
        let g = Conv2dGeom { n, ..self.g };
        match &mut self.weight {
            Some((mk, im, scratch)) => {
                wgrad::backward_weight_filled(*mk, &g, im, x, fill, dw, scratch);
                true
            }
            None => false,
        }
    }
}
