//! The geometry of a 2-D convolution (1-D runs with `h = 1`): sizes, padding, the output
//! length formula and the valid ranges every lowering clips its taps to.

/// Geometry of a 2-D convolution: zero padding may differ per side (`pad_t`/`pad_l` are
/// given; bottom/right follow from `out_h`/`out_w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_t: usize,
    pub pad_l: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub groups: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// Output length along one axis: floor((n + pad_total - dilation * (k - 1) - 1) / stride) + 1,
/// or `None` when the dilated kernel spans more than the padded input.
pub fn conv_out_len(
    n: usize,
    pad_total: usize,
    k: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = n.checked_add(pad_total)?;
    if stride == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

impl Conv2dGeom {
    /// Input channels per group.
    pub fn cin_g(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    pub fn cout_g(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of the lowered matrix: input channels per group times kernel taps.
    pub fn kdim(&self) -> usize {
        self.cin_g() * self.k_h * self.k_w
    }
    /// Output positions per image and channel.
    pub fn positions(&self) -> usize {
        self.out_h * self.out_w
    }
    /// Multiply-adds counted as two FLOPs, bias excluded.
    pub fn flops(&self) -> f64 {
        2.0 * self.n as f64 * self.c_out as f64 * self.positions() as f64 * self.kdim() as f64
    }
    /// A 1x1 convolution with stride 1 and no padding: the lowered matrix is the input itself.
    pub fn is_pointwise(&self) -> bool {
        self.k_h == 1
            && self.k_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_t == 0
            && self.pad_l == 0
            && self.out_h == self.h
            && self.out_w == self.w
    }
    /// Each output channel reads one input channel (groups == c_in).
    pub fn is_depthwise(&self) -> bool {
        self.cin_g() == 1 && self.groups > 1
    }
    /// Output positions per im2col tile, so that the column buffer stays near 1 MiB.
    pub(crate) fn tile(&self) -> usize {
        let p = self.positions().max(1);
        if self.is_pointwise() {
            return p;
        }
        (262_144 / self.kdim().max(1)).clamp(64, 4096).min(p)
    }
    /// Valid output columns `[lo, hi)` for kernel column `kj`: those whose input column is in range.
    pub(crate) fn valid_cols(&self, kj: usize) -> (usize, usize) {
        valid_range(
            self.out_w,
            self.stride_w,
            kj * self.dil_w,
            self.pad_l,
            self.w,
        )
    }
}

/// For outputs `o` in `0..out`, input index `o * stride + offset - pad`; returns the range of
/// `o` for which it lies in `0..n`.
pub(crate) fn valid_range(
    out: usize,
    stride: usize,
    offset: usize,
    pad: usize,
    n: usize,
) -> (usize, usize) {
    // o * stride + offset >= pad  and  o * stride + offset < pad + n
    let lo = if offset >= pad {
        0
    } else {
        (pad - offset).div_ceil(stride)
    };
    let hi = if pad + n <= offset {
        0
    } else {
        (pad + n - offset).div_ceil(stride)
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}
