//! A compiled plan allocates nothing on the heap once it has run: a counting global allocator
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

#[test]
fn inference_on_a_plan_allocates_nothing_after_the_first_run() {
    use convnet::rng::Rng;
    let spec =
        convnet::spec::Spec::load(std::path::Path::new("examples/fashion_mnist.toml")).unwrap();
    let model = spec.build_model(&mut Rng::new(1)).unwrap();
    let mut plan = convnet::plan::Plan::compile(&model, &model.input, 64).unwrap();
    let x: Vec<f32> = (0..64 * 784).map(|i| (i % 17) as f32 / 17.0).collect();
    for _ in 0..5 {
        plan.run(&x).unwrap(); // buffers and the workers' scratch reach their sizes
    }
    let runs = rayon::scope(|_| {
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..20 {
            plan.run(&x).unwrap();
        }
        ALLOCS.load(Ordering::Relaxed) - before
    });
    assert_eq!(runs, 0, "allocations in 20 inference runs");
}
