//! A compiled plan, for inference and for a training step (forward, the loss, backward and
//! the optimizer's update), allocates nothing on the heap once it has run: a counting global allocator
//! counts the allocations of later runs. They run on a worker of the thread pool, as a
//! command's work does: parallel loops started from outside the pool go through rayon's
//! injector queue, which allocates a block of 63 slots as it fills (measured: 2 blocks in 20
//! runs of this plan), which is rayon's and not the plan's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The count is the process's: the tests take turns so that one's set-up is not counted
/// in another's runs.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn inference_on_a_plan_allocates_nothing_after_the_first_run() {
    let _turn = turn();
    use convnet::rng::Rng;
    let spec =
        convnet::spec::Spec::load(std::path::Path::new("examples/fashion_mnist.toml")).unwrap();
    let model = spec.build_model(&mut Rng::new(1)).unwrap();
    let mut plan = convnet::plan::Plan::compile(&model, &model.input, 64).unwrap();
    let x: Vec<f32> = (0..64 * 784).map(|i| (i % 17) as f32 / 17.0).collect();
    for _ in 0..5 {
        plan.run(&x).unwrap(); // buffers and the workers' scratch reach their sizes
    }
    let runs = counted(20, || {
        plan.run(&x).unwrap();
    });
    assert_eq!(runs, 0, "allocations in 20 inference runs");
}

/// Allocations of `runs` calls of `f` made on a worker of the thread pool.
fn counted(runs: usize, mut f: impl FnMut() + Send) -> usize {
    rayon::scope(|_| {
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..runs {
            f();
        }
        ALLOCS.load(Ordering::Relaxed) - before
    })
}

/// Training steps of `spec` (batch 32) with `optimizer`: allocations in 10 steps after 3.
fn training_step_allocations(spec: &str, optimizer: convnet::optim::OptimizerKind) -> usize {
    use convnet::ops::CrossEntropyOptions;
    use convnet::plan::{PlanLoss, TrainPlan};
    use convnet::rng::Rng;
    let spec = convnet::spec::Spec::load(std::path::Path::new(spec)).unwrap();
    let model = spec.build_model(&mut Rng::new(1)).unwrap();
    let mut plan = TrainPlan::compile(&model, &model.input, 32).unwrap();
    let per: usize = model.input.iter().product();
    let x: Vec<f32> = (0..32 * per).map(|i| (i % 17) as f32 / 17.0).collect();
    let labels: Vec<usize> = (0..32).map(|i| i % 10).collect();
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    let params = model.named_params();
    let mut opt = convnet::optim::Optimizer::new(optimizer, 1e-4).unwrap();
    let mut rng = Rng::new(7);
    let mut step = || {
        let loss = PlanLoss::CrossEntropy {
            targets: &labels,
            options: &options,
        };
        let l = plan.train_step(&x, loss, &mut rng).unwrap();
        assert!(l.is_finite());
        opt.step(&params, 1e-3).unwrap();
    };
    for _ in 0..3 {
        step(); // the optimizer's state and the gradient tensors are made
    }
    counted(10, step)
}

#[test]
fn a_training_step_on_a_plan_allocates_nothing_after_the_first() {
    let _turn = turn();
    use convnet::optim::OptimizerKind;
    let adam = OptimizerKind::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let sgd = OptimizerKind::Sgd {
        momentum: 0.9,
        nesterov: true,
        dampening: 0.0,
    };
    // convolutions, batch norm, pooling, dropout and dense layers
    for (spec, opt) in [
        ("examples/fashion_mnist.toml", adam),
        ("examples/fashion_mnist_fast.toml", sgd),
    ] {
        assert_eq!(
            training_step_allocations(spec, opt),
            0,
            "allocations in 10 training steps of {spec}"
        );
    }
}
