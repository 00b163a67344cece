//! The training-memory estimate (`convnet summary`, `train`'s budget check) against the peak
//! a training step really reaches, measured by a global allocator that tracks the bytes live
//! and their peak. Each model is measured in a process of its own (this test binary run
//! again), so that one model's buffers do not hide another's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use convnet::Tensor;
use convnet::rng::Rng;

struct Tracking;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n >= l.size() {
            grew(n - l.size());
        } else {
            LIVE.fetch_sub(l.size() - n, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// The most bytes live above what was live when `f` started.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

/// The spec's estimate and the measured peak of building its model and optimizer and taking
/// two training steps (the optimizer's state appears at the first) on the engine `convnet
/// train` would use, at the spec's batch size. The batch itself is made before.
fn measure(spec_file: &str) -> (convnet::train::memory::MemoryEstimate, usize) {
    let spec = convnet::spec::Spec::load(std::path::Path::new(spec_file)).unwrap();
    let t = &spec.train;
    let batch = t.batch_size;
    let est = convnet::train::memory::estimate_spec(&spec).unwrap();
    let input = convnet::tensor::meta(|| spec.build_model(&mut Rng::new(0)))
        .unwrap()
        .input
        .clone();
    let mut shape = vec![batch];
    shape.extend(&input);
    let n: usize = shape.iter().product();
    let x = Tensor::from_vec((0..n).map(|i| (i % 13) as f32 / 13.0).collect(), &shape).unwrap();
    let targets: Vec<usize> = (0..batch).map(|i| i % 2).collect();
    let opts = convnet::ops::CrossEntropyOptions::default();
    let classify = spec.train.task == convnet::spec::TaskKind::Supervised;
    let loss = |o: &Tensor| {
        if classify && o.rank() == 2 && o.shape()[1] > 2 {
            convnet::ops::cross_entropy(o, &targets, &opts)
        } else {
            convnet::ops::mse(o, &Tensor::zeros(o.shape())?)
        }
    };
    let eager = std::env::var_os("CONVNET_EAGER").is_some();
    let peak = peak_of(|| {
        let model = spec.build_model(&mut Rng::new(1)).unwrap();
        let params = model.named_params();
        let mut opt = convnet::optim::Optimizer::new(t.optimizer.clone(), t.weight_decay).unwrap();
        let mut plan = match eager {
            true => None,
            false => convnet::plan::TrainPlan::compile(&model, &input, batch).ok(),
        };
        let engine = match plan {
            Some(_) => convnet::train::memory::Engine::Plan,
            None => convnet::train::memory::Engine::Eager,
        };
        assert_eq!(engine, est.engine, "{spec_file}: the estimate's engine");
        let mut rng = Rng::new(2);
        for _ in 0..2 {
            match &mut plan {
                Some(p) => {
                    p.step(&x, &mut rng, loss).unwrap();
                }
                None => {
                    let mut ctx = convnet::nn::Ctx {
                        training: true,
                        rng: &mut rng,
                        lengths: None,
                    };
                    let out = model.forward(&x, &mut ctx).unwrap();
                    loss(&out).unwrap().backward().unwrap();
                }
            }
            opt.step(&params, 0.01).unwrap();
        }
    });
    (est, peak)
}

/// Run by [`the_estimate_is_within_a_fifth_of_the_measured_peak`] in a process of its own.
#[test]
fn measure_one() {
    let Ok(spec) = std::env::var("CONVNET_MEASURE_SPEC") else {
        return;
    };
    let (est, peak) = measure(&spec);
    println!("MEASURED {} {peak}", est.total());
}

#[test]
fn the_estimate_is_within_a_fifth_of_the_measured_peak() {
    let mut specs: Vec<String> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        // (a GAN's two models train in turn; its estimate adds them up)
        .filter(|f| f.ends_with(".toml") && !f.contains("dcgan"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 10, "{specs:?}");
    let mut table = String::new();
    let mut outside = Vec::new();
    for spec in &specs {
        for eager in [false, true] {
            let mut c = std::process::Command::new(std::env::current_exe().unwrap());
            c.args([
                "--exact",
                "measure_one",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("CONVNET_MEASURE_SPEC", spec);
            if eager {
                c.env("CONVNET_EAGER", "1");
            } else {
                c.env_remove("CONVNET_EAGER");
            }
            let out = c.output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find_map(|l| l.split_once("MEASURED ").map(|(_, v)| v))
                .unwrap_or_else(|| {
                    panic!("{spec}: {text}{}", String::from_utf8_lossy(&out.stderr))
                });
            let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let ratio = v[1] / v[0];
            let engine = if eager {
                "eager (forced)"
            } else {
                "as train picks"
            };
            table += &format!(
                "{spec:<42} {engine:<15} estimate {:>9.2} MB  measured {:>9.2} MB  {ratio:.2}\n",
                v[0] / 1e6,
                v[1] / 1e6
            );
            if !(0.8..=1.2).contains(&ratio) {
                outside.push(format!("{spec} {engine}: {ratio:.2}"));
            }
        }
    }
    println!("{table}");
    assert!(
        outside.is_empty(),
        "measured / estimated outside [0.8, 1.2]: {outside:?}\n{table}"
    );
}
