//! `Tensor`: a cheap handle to a shared f32 buffer, its shape, and (when recorded) the autograd
//! node that produced it.
//!
//! Tensors are contiguous and row-major; activations follow PyTorch's layouts (NCHW for images,
//! NCL for sequences). Cloning a tensor clones the handle, not the data; `reshape` shares the
//! buffer. Parameters are leaves with `requires_grad` whose gradient accumulates in `grad()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::autograd::{self, Node};
use crate::error::{Error, Result, shape_err};
use crate::rng::Rng;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) storage: Arc<RwLock<Vec<f32>>>,
    pub(crate) requires_grad: bool,
    pub(crate) node: Option<Node>,
    pub(crate) grad: Mutex<Option<Tensor>>,
}

/// An n-dimensional f32 tensor with optional gradient tracking.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.data();
        let head: Vec<f32> = d.iter().take(8).copied().collect();
        write!(
            f,
            "Tensor(shape={:?}, requires_grad={}, data[..{}]={:?})",
            self.shape(),
            self.requires_grad(),
            head.len(),
            head
        )
    }
}

pub(crate) fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Checked element count: an error instead of an overflow for absurd shapes, and instead of
/// an abort for a tensor beyond the memory budget ([`crate::limits`]; not checked in [`meta`]).
pub(crate) fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= (isize::MAX as usize) / 4)
        .ok_or_else(|| Error::Shape {
            op,
            msg: format!("shape {shape:?} has too many elements"),
        })?;
    if !is_meta() {
        crate::limits::check_with(crate::limits::f32_bytes(n), || {
            format!("{op}: a tensor of shape {shape:?}")
        })?;
    }
    Ok(n)
}

thread_local! {
    static META: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether tensors made on this thread are shapes without storage (see [`meta`]).
pub(crate) fn is_meta() -> bool {
    META.with(|m| m.get())
}

/// Run `f` with "meta" tensors: the tensors it creates have their shapes but no storage, so
/// that a model of any size can be built to be counted and summarised (PyTorch's meta device).
/// Nothing built inside may be run; reading a meta tensor's values yields an empty slice.
pub fn meta<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            META.with(|m| m.set(self.0));
        }
    }
    let _reset = Reset(META.with(|m| m.replace(true)));
    f()
}

impl Tensor {
    pub(crate) fn make(
        data: Vec<f32>,
        shape: Vec<usize>,
        requires_grad: bool,
        node: Option<Node>,
    ) -> Tensor {
        debug_assert!(data.len() == numel_of(&shape) || (is_meta() && data.is_empty()));
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            storage: Arc::new(RwLock::new(data)),
            requires_grad,
            node,
            grad: Mutex::new(None),
        }))
    }

    /// A tensor that owns `data` laid out row-major in `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel("from_vec", shape)?;
        if data.len() != n {
            return shape_err(
                "from_vec",
                format!(
                    "{} values cannot fill shape {:?} ({} elements)",
                    data.len(),
                    shape,
                    n
                ),
            );
        }
        Ok(Tensor::make(data, shape.to_vec(), false, None))
    }

    /// A rank-0 tensor holding `v`.
    pub fn scalar(v: f32) -> Tensor {
        Tensor::make(vec![v], vec![], false, None)
    }

    /// A tensor of `shape` filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Result<Tensor> {
        let n = checked_numel("full", shape)?;
        let n = if is_meta() { 0 } else { n };
        Ok(Tensor::make(vec![v; n], shape.to_vec(), false, None))
    }

    /// Zeros of `shape`.
    pub fn zeros(shape: &[usize]) -> Result<Tensor> {
        Tensor::full(shape, 0.0)
    }

    /// Ones of `shape`.
    pub fn ones(shape: &[usize]) -> Result<Tensor> {
        Tensor::full(shape, 1.0)
    }

    /// Standard normal samples.
    pub fn randn(shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
        let n = checked_numel("randn", shape)?;
        let n = if is_meta() { 0 } else { n };
        Ok(Tensor::make(
            (0..n).map(|_| rng.normal()).collect(),
            shape.to_vec(),
            false,
            None,
        ))
    }

    /// Uniform samples in [lo, hi).
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Result<Tensor> {
        let n = checked_numel("rand_uniform", shape)?;
        let n = if is_meta() { 0 } else { n };
        Ok(Tensor::make(
            (0..n).map(|_| rng.uniform_range(lo, hi)).collect(),
            shape.to_vec(),
            false,
            None,
        ))
    }

    /// A leaf that requires grad, sharing this tensor's buffer: how parameters are made.
    pub fn requires_grad_(self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape: self.0.shape.clone(),
            storage: self.0.storage.clone(),
            requires_grad: true,
            node: None,
            grad: Mutex::new(None),
        }))
    }

    /// The same buffer, cut from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape: self.0.shape.clone(),
            storage: self.0.storage.clone(),
            requires_grad: false,
            node: None,
            grad: Mutex::new(None),
        }))
    }

    /// A tensor with the same shape and a fresh copy of the data, cut from the graph.
    pub fn deep_clone(&self) -> Tensor {
        Tensor::make(self.to_vec(), self.shape().to_vec(), false, None)
    }

    /// Unique identity of this handle (used by autograd to key gradients).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel_of(&self.0.shape)
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// Whether this tensor was produced by a recorded op (as opposed to a leaf).
    pub fn is_leaf(&self) -> bool {
        self.0.node.is_none()
    }

    /// Name of the op that produced this tensor, if recorded.
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.node.as_ref().map(|n| n.name)
    }

    /// Read access to the data.
    pub fn data(&self) -> RwLockReadGuard<'_, Vec<f32>> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access to the data, for in-place updates of parameters and running statistics.
    /// Writing to a tensor that a recorded graph still needs changes what backward computes,
    /// as in PyTorch; optimizers write only after backward.
    pub fn data_mut(&self) -> RwLockWriteGuard<'_, Vec<f32>> {
        self.0.storage.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the data.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().clone()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return shape_err(
                "item",
                format!(
                    "tensor of shape {:?} has {} elements, not 1",
                    self.shape(),
                    self.numel()
                ),
            );
        }
        Ok(self.data()[0])
    }

    /// The accumulated gradient of a leaf (or `None` before any backward reached it).
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this handle is the only one to the tensor and its buffer (no clone, no view
    /// shares it), so that writing into it changes nothing anyone else sees.
    pub(crate) fn unshared(&self) -> bool {
        Arc::strong_count(&self.0) == 1 && Arc::strong_count(&self.0.storage) == 1
    }

    /// Set the gradient (a compiled training plan's backward, in place of autograd's).
    pub(crate) fn set_grad(&self, g: Tensor) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = Some(g);
    }

    /// Forget the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Reverse-mode differentiation from this scalar: gradients accumulate into the `grad()` of
    /// every leaf that requires grad. The graph's saved buffers are freed as backward passes
    /// them, so a graph can be walked once (as in PyTorch without `retain_graph`).
    pub fn backward(&self) -> Result<()> {
        autograd::backward(self, None)
    }

    /// Reverse-mode differentiation from a tensor of any shape, given the gradient of some
    /// scalar with respect to it (PyTorch's `y.backward(gradient)`).
    pub fn backward_with_grad(&self, grad: &Tensor) -> Result<()> {
        autograd::backward(self, Some(grad))
    }

    /// Whether this handle is the only one to its buffer (so it may be written in place).
    pub(crate) fn is_unique(&self) -> bool {
        Arc::strong_count(&self.0) == 1 && Arc::strong_count(&self.0.storage) == 1
    }

    /// Whether two tensors share one buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn with_shape(&self, shape: Vec<usize>, node: Option<Node>) -> Tensor {
        let requires_grad = node.is_some();
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            storage: self.0.storage.clone(),
            requires_grad,
            node,
            grad: Mutex::new(None),
        }))
    }
}
