#!/usr/bin/env python3
"""Expected data-parallel throughput on N machines, from a ring all-reduce model calibrated
on one machine (tools/dist/scaling.sh). Prints the markdown tables of BENCHMARKS.md.

A ring all-reduce of B bytes in K buckets over N machines takes
    T(N) = 2 (N - 1) K alpha + 2 (N - 1) / N * B / beta
(2 (N - 1) steps per bucket, each sending one N-th of it: a latency alpha per step, and every
byte crosses each link 2 (N - 1) / N times). A step takes t = t_c + T(N) when the sums wait
for backward, t = t_c + max(T(N) - f * t_c, T_last) with buckets summed while backward runs
(f: the part of the step that is backward, T_last: the last bucket, which nothing hides).
Samples/s = N * b / t and efficiency = t_c / t.

Usage: tools/dist/scaling_model.py [--step-ms 56.7] [--gflops 58]
"""
import argparse

p = argparse.ArgumentParser()
p.add_argument("--step-ms", type=float, default=56.7,
               help="measured F.train step on one machine (batch 128), ms")
p.add_argument("--f-gflop", type=float, default=3.30,
               help="F.train step work, GFLOP (forward + backward, batch 128)")
args = p.parse_args()
rate = args.f_gflop / (args.step_ms / 1e3)  # GFLOP/s this machine reaches on F

models = {
    # name: (gradient values, GFLOP per sample forward + backward, batch per machine)
    "F (421,642 parameters, batch 128 per machine)": (421_642, args.f_gflop / 128, 128),
    "ResNet-18 sized (11.7 M parameters, 224x224, batch 32 per machine)": (11_689_512, 3 * 3.64, 32),
}
links = {"10 Gbit/s (TCP, alpha 30 us)": (1.25e9, 30e-6),
         "100 Gbit/s (RDMA, alpha 5 us)": (12.5e9, 5e-6)}
BUCKET = 4 * (1 << 18)  # bytes per bucket, as train/parallel.rs
BACKWARD = 2 / 3  # the part of a step that is backward


def allreduce(n, nbytes, beta, alpha):
    buckets = max(1, -(-nbytes // BUCKET))
    return 2 * (n - 1) * buckets * alpha + 2 * (n - 1) / n * nbytes / beta, \
        2 * (n - 1) * alpha + 2 * (n - 1) / n * min(nbytes, BUCKET) / beta


def step(tc, n, nbytes, beta, alpha):
    """Seconds of a step after backward and with buckets during it."""
    if n == 1:
        return tc, tc
    t, last = allreduce(n, nbytes, beta, alpha)
    return tc + t, tc + max(t - BACKWARD * tc, last)


print(f"calibration: {rate:.1f} GFLOP/s per machine (F.train step {args.step_ms} ms)\n")
head = ("| machines | " + " | ".join(
    f"{l.split(' (')[0]}: all-reduce ms, samples/s, efficiency (buckets)" for l in links) + " |")
for name, (values, gflop, batch) in models.items():
    tc = gflop * batch / rate
    nbytes = 4 * values
    print(f"**{name}**: {1e3 * tc:.0f} ms of compute a step, "
          f"{nbytes / 2**20:.1f} MiB of gradients (weak scaling: the batch grows with N)\n")
    print(head)
    print("| ---: | ---: | ---: |")
    for n in [2, 4, 8, 16, 32, 64]:
        cells = []
        for beta, alpha in links.values():
            after, during = step(tc, n, nbytes, beta, alpha)
            cells.append(f"{1e3 * (after - tc):.1f}, {n * batch / after:,.0f}, "
                         f"{tc / after:.0%} ({tc / during:.0%})")
        print(f"| {n} | " + " | ".join(cells) + " |")
    print()

# strong scaling: F with a global batch of 128 shared by N machines
values, gflop, batch = models[next(iter(models))]
print("**F, strong scaling**: one global batch of 128 shared by N machines "
      "(compute taken as 1/N of one machine's, which small parts do not reach)\n")
print(head)
print("| ---: | ---: | ---: |")
for n in [2, 4, 8, 16, 32, 64]:
    tc = gflop * batch / rate / n
    cells = []
    for beta, alpha in links.values():
        after, during = step(tc, n, 4 * values, beta, alpha)
        cells.append(f"{1e3 * (after - tc):.1f}, {batch / after:,.0f}, "
                     f"{tc / after:.0%} ({tc / during:.0%})")
    print(f"| {n} | " + " | ".join(cells) + " |")
