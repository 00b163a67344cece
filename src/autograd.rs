//! Define-by-run reverse-mode autodiff: the recorded node, `backward`, and the no-grad mode.
//!
//! Each op that sees an input requiring grad records a `Node` on its output: the inputs and a
//! one-shot closure that maps the output's gradient to the inputs' gradients. Backward walks
//! the nodes in reverse topological order; gradients of a tensor used several times are summed
//! before its node runs. Running a node consumes its closure and releases its inputs, so saved
//! buffers are freed as soon as backward has no more use for them.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Maps the gradient of an op's output to the gradients of its inputs (`None`: no gradient).
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send>;

pub(crate) struct Node {
    pub(crate) name: &'static str,
    inputs: Mutex<Vec<Tensor>>,
    backward: Mutex<Option<BackwardFn>>,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, ops on this thread record nothing (inference, evaluation, optimizer steps).
pub struct NoGradGuard {
    prev: bool,
}

impl NoGradGuard {
    /// Turn recording off until the guard is dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let prev = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { prev }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Run `f` with recording off.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _g = NoGradGuard::new();
    f()
}

/// Build an op's output: records a node when recording is on and an input requires grad.
pub(crate) fn output(
    name: &'static str,
    data: Vec<f32>,
    shape: Vec<usize>,
    inputs: &[&Tensor],
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Tensor {
    match make_node(name, inputs, backward) {
        Some(node) => Tensor::make(data, shape, true, Some(node)),
        None => Tensor::make(data, shape, false, None),
    }
}

pub(crate) fn make_node(
    name: &'static str,
    inputs: &[&Tensor],
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Option<Node> {
    if is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
        Some(Node {
            name,
            inputs: Mutex::new(inputs.iter().map(|t| (*t).clone()).collect()),
            backward: Mutex::new(Some(Box::new(backward))),
        })
    } else {
        None
    }
}

fn accumulate(into: &mut HashMap<u64, Tensor>, id: u64, g: Tensor) -> Result<()> {
    match into.remove(&id) {
        None => {
            into.insert(id, g);
        }
        Some(prev) => {
            if prev.shape() != g.shape() {
                return Err(Error::Autograd(format!(
                    "gradient shapes disagree: {:?} vs {:?}",
                    prev.shape(),
                    g.shape()
                )));
            }
            // Out of place: a gradient handle may share its buffer with another (an add passes
            // one gradient to both inputs), so it is never written to.
            let sum: Vec<f32> = prev
                .data()
                .iter()
                .zip(g.data().iter())
                .map(|(a, b)| a + b)
                .collect();
            let prev = Tensor::make(sum, prev.shape().to_vec(), false, None);
            into.insert(id, prev);
        }
    }
    Ok(())
}

pub(crate) fn backward(root: &Tensor, seed: Option<&Tensor>) -> Result<()> {
    if let Some(g) = seed {
        if g.shape() != root.shape() {
            return Err(Error::Autograd(format!(
                "the gradient given to backward has shape {:?}, the tensor {:?}",
                g.shape(),
                root.shape()
            )));
        }
    } else if root.numel() != 1 {
        return Err(Error::Autograd(format!(
            "backward() needs a scalar (one element), got shape {:?}",
            root.shape()
        )));
    }
    if !root.requires_grad() {
        return Err(Error::Autograd(
            "backward() on a tensor that does not require grad: no parameter reaches it, or it was computed under no_grad"
                .into(),
        ));
    }
    // Post-order DFS over the recorded graph.
    let mut order: Vec<Option<Tensor>> = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(Some(t));
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let inputs: Vec<Tensor> = match &t.0.node {
            Some(node) => node
                .inputs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            None => Vec::new(),
        };
        stack.push((t, true));
        for i in inputs {
            if i.requires_grad() && !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }

    let _ng = NoGradGuard::new();
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    let seed = match seed {
        Some(g) => g.detach(),
        None => Tensor::full(root.shape(), 1.0)?,
    };
    grads.insert(root.id(), seed);
    for slot in order.iter_mut().rev() {
        let Some(t) = slot.take() else { continue };
        let Some(g) = grads.remove(&t.id()) else {
            continue;
        };
        match &t.0.node {
            None => {
                let mut slot = t.0.grad.lock().unwrap_or_else(|e| e.into_inner());
                match slot.as_ref() {
                    // The leaf keeps the gradient buffer when nothing else holds it.
                    None if Arc::strong_count(&g.0) == 1
                        && Arc::strong_count(&g.0.storage) == 1 =>
                    {
                        *slot = Some(g.detach())
                    }
                    None => *slot = Some(g.deep_clone()),
                    Some(prev) => {
                        let mut p = prev.data_mut();
                        for (a, b) in p.iter_mut().zip(g.data().iter()) {
                            *a += *b;
                        }
                    }
                }
            }
            Some(node) => {
                let f = node
                    .backward
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let inputs =
                    std::mem::take(&mut *node.inputs.lock().unwrap_or_else(|e| e.into_inner()));
                let Some(f) = f else {
                    return Err(Error::Autograd(format!(
                        "backward through the graph of `{}` a second time: its saved buffers were freed by the first backward",
                        node.name
                    )));
                };
                let in_grads = f(&g)?;
                if in_grads.len() != inputs.len() {
                    return Err(Error::Autograd(format!(
                        "`{}` returned {} gradients for {} inputs",
                        node.name,
                        in_grads.len(),
                        inputs.len()
                    )));
                }
                for (inp, ig) in inputs.iter().zip(in_grads) {
                    if let Some(ig) = ig {
                        if !inp.requires_grad() {
                            continue;
                        }
                        if ig.shape() != inp.shape() {
                            return Err(Error::Autograd(format!(
                                "`{}` produced a gradient of shape {:?} for an input of shape {:?}",
                                node.name,
                                ig.shape(),
                                inp.shape()
                            )));
                        }
                        accumulate(&mut grads, inp.id(), ig)?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use crate::ops;
    use crate::tensor::Tensor;

    #[test]
    fn intermediate_buffers_are_freed_by_backward() {
        let x = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3])
            .unwrap()
            .requires_grad_();
        let y = ops::exp(&x).unwrap();
        let weak = std::sync::Arc::downgrade(&y.0.storage);
        let z = ops::sum_all(&ops::mul(&y, &y).unwrap()).unwrap();
        drop(y);
        assert!(
            weak.upgrade().is_some(),
            "the graph keeps the intermediate alive until backward"
        );
        z.backward().unwrap();
        assert!(
            weak.upgrade().is_none(),
            "backward released the intermediate while the loss is still alive"
        );
        let g = x.grad().unwrap().to_vec();
        for (gi, xi) in g.iter().zip([0.5f32, -1.0, 2.0]) {
            assert!((gi - 2.0 * (2.0 * xi).exp()).abs() < 1e-4 * gi.abs());
        }
    }
}
