//! Convolution kernels on slices. This file only picks the path for a geometry and a CPU:
//!
//! - `implicit`: stride-1 convolutions read in place from the zero-padded input through the
//!   micro-kernel (forward and input gradient), weight gradient in `wgrad` (taps by output
//!   channels over position-major dY); where its wide rows waste too much, with `chanvec`'s
//!   kernel (output channels across the lanes);
//! - `packed`: other strides, lowered by im2col straight into the micro-kernel's panels;
//!   their input gradient (a strided transposed convolution) as one stride-1 implicit
//!   convolution of dY per phase of dX (`phases`);
//! - `tiled`: tiled im2col + `matrixmultiply`, where no micro-kernel applies;
//! - `depthwise`: direct loops for `groups == c_in`; `depthwise_wide` for their stride 1, on
//!   the zero-padded plane in vector-register blocks.
//!
//! 1-D convolutions run here as 2-D ones with `h = 1`; transposed convolutions reuse these
//! kernels with the roles of input and output swapped (see `ops::conv_transpose`).

mod backward;
mod block;
mod chanvec;
mod depthwise;
mod depthwise_wide;
mod geom;
mod im2col;
mod implicit;
mod packed;
mod phases;
#[cfg(test)]
pub(crate) mod reference;
#[cfg(test)]
mod tests;
mod tiled;
mod wgrad;

use rayon::prelude::*;

pub use super::Epilogue;
pub use backward::ConvBackward;
pub use geom::{Conv2dGeom, conv_out_len};
pub use implicit::Band;
use implicit::{Implicit, ImplicitForward};
use packed::PackedForward;

use super::micro::Micro;

/// Forward convolution.
///
/// # Shapes
/// x: `(n, c_in, h, w)`, w: `(c_out, c_in / groups, k_h, k_w)`, bias: `(c_out)`,
/// y: `(n, c_out, out_h, out_w)`, fully overwritten.
pub fn conv2d_forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    conv2d_forward_with(Micro::best(), g, x, w, bias, y)
}

/// [`conv2d_forward`] through the given micro-kernel, or through `matrixmultiply` with `None`.
pub(crate) fn conv2d_forward_with(
    micro: Option<Micro>,
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    debug_assert_eq!(x.len(), g.n * g.c_in * g.h * g.w);
    debug_assert_eq!(w.len(), g.c_out * g.kdim());
    debug_assert_eq!(y.len(), g.n * g.c_out * g.positions());
    if g.is_depthwise() {
        return depthwise::forward(g, x, w, bias, y);
    }
    match micro {
        Some(mk) => match Implicit::of(g) {
            Some(im) => implicit::forward(mk, g, &im, x, w, bias, y),
            None => packed::forward(mk, g, x, w, bias, y),
        },
        None => tiled::forward(g, x, w, bias, y, None),
    }
}

/// Gradient of the convolution with respect to its input.
///
/// # Shapes
/// dy: `(n, c_out, out_h, out_w)`, w: `(c_out, c_in / groups, k_h, k_w)`, dx: `(n, c_in, h, w)`,
/// fully overwritten.
pub fn conv2d_backward_input(g: &Conv2dGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    conv2d_backward_input_with(Micro::best(), g, dy, w, dx)
}

/// A convolution's forward prepared once for its geometry (`g.n` the largest batch): the path
/// chosen, the weights packed, the padded input's buffer allocated. A compiled plan keeps one
/// per convolution and runs it on every batch without allocating.
pub struct ConvForward {
    g: Conv2dGeom,
    path: ForwardPath,
    /// The implicit path's zero-padded input (zeroed once; only interiors are written).
    padded: Vec<f32>,
}

enum ForwardPath {
    Implicit(ImplicitForward, Implicit),
    Packed(PackedForward),
    /// Without a micro-kernel, or depthwise: the weights as given.
    Plain(Vec<f32>),
}

impl ConvForward {
    /// Values [`ConvForward::new`] allocates for `g` beside the packed weights: the padded
    /// input of the implicit path (a sizing from the geometry alone, for memory estimates).
    pub fn buffer_len(g: &Conv2dGeom) -> u64 {
        match (Micro::best(), Implicit::of(g)) {
            (Some(_), Some(im)) if !g.is_depthwise() && !im.in_place(g) => im.padded_values(g),
            _ => 0,
        }
    }

    /// Prepared for the fastest micro-kernel of this CPU.
    pub fn new(g: Conv2dGeom) -> ConvForward {
        ConvForward::with(Micro::best(), g)
    }

    pub(crate) fn with(micro: Option<Micro>, g: Conv2dGeom) -> ConvForward {
        let (path, padded) = match (micro, Implicit::of(&g)) {
            (Some(mk), Some(im)) if !g.is_depthwise() => {
                let f = ImplicitForward::new(mk, &g, im);
                let len = if im.in_place(&g) {
                    0
                } else {
                    im.padded_len(&g, f.slack(&g))
                };
                (ForwardPath::Implicit(f, im), vec![0.0; len])
            }
            (Some(mk), None) if !g.is_depthwise() => {
                (ForwardPath::Packed(PackedForward::new(mk, &g)), Vec::new())
            }
            _ => (ForwardPath::Plain(Vec::new()), Vec::new()),
        };
        ConvForward { g, path, padded }
    }

    /// The geometry at the largest batch.
    pub fn geom(&self) -> &Conv2dGeom {
        &self.g
    }

    /// Take (pack) the weights, `(c_out, c_in / groups, k_h, k_w)`.
    pub fn set_weights(&mut self, w: &[f32]) {
        debug_assert_eq!(w.len(), self.g.c_out * self.g.kdim());
        match &mut self.path {
            ForwardPath::Implicit(f, _) => f.set_weights(&self.g, w),
            ForwardPath::Packed(f) => f.set_weights(&self.g, w),
            ForwardPath::Plain(v) => {
                v.clear();
                v.extend_from_slice(w);
            }
        }
    }

    /// `y = conv(x) + bias` for the first `n` images, then `epi` on each output channel's
    /// positions of each finished block (while it is still in cache).
    ///
    /// # Shapes
    /// x: `(n, c_in, h, w)`, bias: `(c_out)`, y: `(n, c_out, out_h, out_w)`, `n <= g.n`.
    pub fn run(
        &mut self,
        n: usize,
        x: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        epi: Option<Epilogue>,
    ) {
        assert!(
            n <= self.g.n,
            "ConvForward: {n} images for a plan of {}",
            self.g.n
        );
        let g = Conv2dGeom { n, ..self.g };
        let (x, y) = (
            &x[..n * g.c_in * g.h * g.w],
            &mut y[..n * g.c_out * g.positions()],
        );
        match &self.path {
            ForwardPath::Implicit(f, im) => {
                if im.in_place(&g) {
                    f.run(&g, x, bias, y, epi);
                } else {
                    im.pad_into(&g, x, &mut self.padded);
                    f.run(&g, &self.padded, bias, y, epi);
                }
            }
            ForwardPath::Packed(f) => f.run(&g, x, bias, y, epi),
            ForwardPath::Plain(w) if g.is_depthwise() => {
                depthwise::forward(&g, x, w, bias, y);
                if let Some(epi) = epi {
                    y.par_chunks_mut(g.positions().max(1)).for_each(epi);
                }
            }
            ForwardPath::Plain(w) => tiled::forward(&g, x, w, bias, y, epi),
        }
    }
}

impl ConvForward {
    /// Have [`ConvForward::run_banded`] hand its bands on channels last (`col_stride` the
    /// group's channels), where the channel-vector kernel can run this geometry; returns
    /// whether it will. Call it before [`ConvForward::set_weights`].
    pub fn bands_channels_last(&mut self) -> bool {
        match &mut self.path {
            ForwardPath::Implicit(f, _) if self.g.out_h > 1 => f.bands_channels_last(&self.g),
            _ => false,
        }
    }

    /// Whether [`ConvForward::run_banded`] can run: a stride-1 convolution of more than one
    /// output row on a micro-kernel.
    pub fn banded(&self) -> bool {
        matches!(self.path, ForwardPath::Implicit(..)) && self.g.out_h > 1
    }

    /// Whether a [`ConvForward`] made for `g` would be [`ConvForward::banded`] (from the
    /// geometry alone, as `new` picks its path).
    pub fn can_band(g: &Conv2dGeom) -> bool {
        Micro::best().is_some() && Implicit::of(g).is_some() && !g.is_depthwise() && g.out_h > 1
    }

    /// The convolution (with `bias`) of the first `n` images in bands of output rows (a
    /// multiple of `multiple`, sized so a band's outputs take a quarter of the L2 cache, with
    /// enough bands to keep every thread busy), each handed to `sink` from the worker's cache
    /// instead of being written out (a fused pooling writes only its own output). `sink` must
    /// call no parallel code. Returns false, running nothing, where [`ConvForward::banded`]
    /// is false.
    pub fn run_banded(
        &mut self,
        n: usize,
        x: &[f32],
        bias: Option<&[f32]>,
        multiple: usize,
        sink: &(dyn Fn(Band) + Sync),
    ) -> bool {
        if !self.banded() || n > self.g.n {
            return false;
        }
        let g = Conv2dGeom { n, ..self.g };
        let x = &x[..n * g.c_in * g.h * g.w];
        let ForwardPath::Implicit(f, im) = &self.path else {
            return false;
        };
        let multiple = multiple.max(1);
        let row_bytes = 4 * g.cout_g() * im.row_stride();
        // (measured on F's convolutions, Zen 3: bands of a quarter of L2, here whole images,
        // beat bands sized for L1 by 10-20%: each band pays the tile's set-up again)
        let fit = super::cache::caches().l2 / 4 / (row_bytes * multiple).max(1);
        let mut rows = multiple * fit.max(1);
        let want_items = 4 * rayon::current_num_threads();
        while rows > multiple && n * g.groups * g.out_h.div_ceil(rows) < want_items {
            rows -= multiple;
        }
        if im.in_place(&g) {
            f.run_banded(&g, x, bias, rows, sink);
        } else {
            im.pad_into(&g, x, &mut self.padded);
            f.run_banded(&g, &self.padded, bias, rows, sink);
        }
        true
    }
}

/// [`conv2d_backward_input`] through the given micro-kernel, or `matrixmultiply` with `None`.
pub(crate) fn conv2d_backward_input_with(
    micro: Option<Micro>,
    g: &Conv2dGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    if g.is_depthwise() {
        return depthwise::backward_input(g, dy, w, dx);
    }
    // (with fewer input channels per group than a register block has rows, most of each
    // block would be wasted: the GEMM over the lowered dY is faster there)
    if let Some(mk) = micro.filter(|mk| g.cin_g() >= mk.mr)
        && let Some((gt, im)) = implicit::transposed_as_conv(g)
    {
        let flipped = implicit::flip_weights(g, w);
        return implicit::forward(mk, &gt, &im, dy, &flipped, None, dx);
    }
    // strided: one stride-1 convolution of dY per phase of dX
    if let Some(mk) = micro.filter(|mk| g.cin_g() >= mk.mr)
        && phases::backward_input(mk, g, dy, w, dx)
    {
        return;
    }
    tiled::backward_input(g, dy, w, dx)
}

/// Values the backward of `g` allocates at once, at most (the implicit lowering's weight
/// gradient: the padded input and dY position-major; the other paths work in per-thread
/// blocks).
pub fn backward_scratch_len(g: &Conv2dGeom) -> u64 {
    match Implicit::of(g) {
        Some(im) if !g.is_depthwise() => wgrad::scratch_len(g, &im),
        _ => 0,
    }
}

/// Gradients of the convolution with respect to its weight and bias.
///
/// # Shapes
/// x: `(n, c_in, h, w)`, dy: `(n, c_out, out_h, out_w)`, dw: `(c_out, c_in / groups, k_h, k_w)`,
/// db: `(c_out)`; both fully overwritten.
pub fn conv2d_backward_weight(
    g: &Conv2dGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) {
    conv2d_backward_weight_with(Micro::best(), g, x, dy, dw, db)
}

/// [`conv2d_backward_weight`] through the given micro-kernel, or `matrixmultiply` with `None`.
pub(crate) fn conv2d_backward_weight_with(
    micro: Option<Micro>,
    g: &Conv2dGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) {
    if let Some(db) = db {
        bias_grad(g, dy, db);
    }
    if g.is_depthwise() {
        return depthwise::backward_weight(g, x, dy, dw);
    }
    // (a pointwise convolution's GEMM needs no lowering, and beats `wgrad` there, whose
    // blocks of taps are then whole input planes: B5's weight gradient took 1.5 ms as a GEMM
    // and 3.7 ms through `wgrad` on an Intel Xeon)
    if let (Some(mk), Some(im), false) = (micro, Implicit::of(g), g.is_pointwise()) {
        let mut scratch = wgrad::WeightScratch::default();
        return wgrad::backward_weight(mk, g, &im, (x, dy), dw, &mut scratch);
    }
    tiled::backward_weight(g, x, dy, dw)
}

/// `db[o]`: the sum of dY over images and positions of channel `o`, in f64.
fn bias_grad(g: &Conv2dGeom, dy: &[f32], db: &mut [f32]) {
    let p_all = g.positions();
    db.par_iter_mut().enumerate().for_each(|(o, d)| {
        let mut s = 0f64;
        for img in 0..g.n {
            let row = &dy[(img * g.c_out + o) * p_all..(img * g.c_out + o + 1) * p_all];
            s += super::sum_f64(row);
        }
        *d = s as f32;
    });
}
