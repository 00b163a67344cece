//! The time of the gradient all-reduce of data-parallel training, by buffer size:
//! `cargo build --release --features mpi --example allreduce`, then
//! `mpirun -np N target/release/examples/allreduce`. Rank 0 prints, for each size, the median
//! of 20 all-reduces (after 3 unmeasured ones) and the bus bandwidth it reached
//! (`2 (N - 1) / N * bytes / time`, what a ring moves through each rank's link).

use std::time::Instant;

fn main() -> convnet::Result<()> {
    let world = convnet::dist::from_launcher()?;
    let n = world.size();
    // the F network's gradients (421,642 values), a ResNet-18's (11.7 M), and sizes between
    let sizes = [
        1_000usize, 10_000, 100_000, 421_642, 1_000_000, 4_000_000, 11_689_512,
    ];
    if world.rank() == 0 {
        println!("ranks {n}");
        println!("| values | MiB | median ms | bus GB/s |");
        println!("| ---: | ---: | ---: | ---: |");
    }
    for &len in &sizes {
        let mut buf: Vec<f32> = (0..len).map(|i| (i % 7) as f32).collect();
        let mut times = Vec::new();
        for rep in 0..23 {
            let t = Instant::now();
            world.all_reduce_sum(&mut buf);
            if rep >= 3 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let bytes = 4.0 * len as f64;
        let bus = 2.0 * (n as f64 - 1.0) / n as f64 * bytes / med / 1e9;
        if world.rank() == 0 {
            println!(
                "| {len} | {:.2} | {:.3} | {bus:.2} |",
                bytes / (1 << 20) as f64,
                1e3 * med
            );
        }
    }
    Ok(())
}
