#!/usr/bin/env python3
"""Side-by-side benchmark: the workloads of `convnet bench` in convnet, PyTorch (CPU) and, for
inference, ONNX Runtime, on the same machine in the same run, interleaved (each round runs every
workload in every framework before the next round), with medians over rounds.

Run from the repository root (tools/bench_peers.sh sets up the environment):
    python3 tools/bench_peers.py [--rounds 5] [--threads 2] [--filter NAME] [--markdown]

PyTorch: Debian's python3-torch (1.13) with libopenblas0-pthread; ONNX Runtime from PyPI.
All peers should run under the same GLIBC_TUNABLES (tools/bench_peers.sh sets them).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import onnxruntime as ort
except ImportError:  # reported in the table
    ort = None

CONV = {
    "B1": (64, 1, 28, 28, 32, 3, 1, 1),
    "B2": (64, 32, 14, 14, 64, 3, 1, 1),
    "B3": (8, 64, 56, 56, 64, 3, 1, 1),
    "B4": (8, 128, 28, 28, 128, 3, 1, 1),
    "B5": (32, 64, 32, 32, 64, 1, 1, 0),
}


def timed(fn, reps):
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def conv_flops(n, c, h, w, co, k, s, p, groups=1):
    oh = (h + 2 * p - k) // s + 1
    ow = (w + 2 * p - k) // s + 1
    return 2.0 * n * co * oh * ow * (c // groups) * k * k


def torch_workloads(reps, want):
    res = {}
    for name, (n, c, h, w, co, k, s, p) in CONV.items():
        if not want(name):
            continue
        x = torch.randn(n, c, h, w)
        wt = torch.randn(co, c, k, k)
        with torch.no_grad():
            res[name + ".fwd"] = timed(lambda: F.conv2d(x, wt, None, s, p), reps)
        xg, wg = x.clone().requires_grad_(), wt.clone().requires_grad_()

        def fb():
            y = F.conv2d(xg, wg, None, s, p)
            y.backward(torch.ones_like(y))
            xg.grad = None
            wg.grad = None

        res[name + ".fwdbwd"] = timed(fb, reps)
    if want("DW"):
        x = torch.randn(64, 64, 28, 28)
        wt = torch.randn(64, 1, 3, 3)
        with torch.no_grad():
            res["DW.fwd"] = timed(lambda: F.conv2d(x, wt, None, 1, 1, groups=64), reps)
        xg, wg = x.clone().requires_grad_(), wt.clone().requires_grad_()

        def dwb():
            y = F.conv2d(xg, wg, None, 1, 1, groups=64)
            y.backward(torch.ones_like(y))
            xg.grad = None
            wg.grad = None

        res["DW.fwdbwd"] = timed(dwb, reps)
    if want("C."):
        x = torch.randn(16, 32, 2048)
        ws = [torch.randn(32, 32, 2) * 0.1 for _ in range(10)]

        def stack(h, ws):
            for i, w in enumerate(ws):
                d = 1 << i
                h = F.conv1d(F.pad(h, (d, 0)), w, None, 1, 0, d)
            return h

        with torch.no_grad():
            res["C.fwd"] = timed(lambda: stack(x, ws), reps)
        xg = x.clone().requires_grad_()
        wgs = [w.clone().requires_grad_() for w in ws]

        def cfb():
            y = stack(xg, wgs)
            y.backward(torch.ones_like(y))

        res["C.fwdbwd"] = timed(cfb, reps)
    if want("D."):
        x = torch.randn(64, 64, 7, 7)
        wt = torch.randn(64, 32, 4, 4)
        with torch.no_grad():
            res["D.fwd"] = timed(lambda: F.conv_transpose2d(x, wt, None, 2, 1), reps)
        xg, wg = x.clone().requires_grad_(), wt.clone().requires_grad_()

        def dfb():
            y = F.conv_transpose2d(xg, wg, None, 2, 1)
            y.backward(torch.ones_like(y))
            xg.grad = None
            wg.grad = None

        res["D.fwdbwd"] = timed(dfb, reps)
    if want("E."):
        x = torch.randn(64, 32, 28, 28)
        with torch.no_grad():
            res["E.maxpool.fwd"] = timed(lambda: F.max_pool2d(x, 2), reps)
        xg = x.clone().requires_grad_()

        def mp():
            y = F.max_pool2d(xg, 2)
            y.backward(torch.ones_like(y))
            xg.grad = None

        res["E.maxpool.fwdbwd"] = timed(mp, reps)
        g = torch.randn(64, 256, 7, 7)
        with torch.no_grad():
            res["E.gap.fwd"] = timed(lambda: g.mean(dim=(2, 3)), reps)
    if want("F."):
        net = net_f()
        if want("F.train"):
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            x = torch.randn(128, 1, 28, 28)
            y = torch.randint(0, 10, (128,))

            def step():
                opt.zero_grad()
                F.cross_entropy(net(x), y).backward()
                opt.step()

            for _ in range(5):
                step()
            blocks = []
            for _ in range(min(reps, 3)):
                t = time.perf_counter()
                for _ in range(50):
                    step()
                blocks.append((time.perf_counter() - t) * 1e3 / 50)
            res["F.train"] = statistics.median(blocks)
        if want("F.infer"):
            net.eval()
            x = torch.randn(256, 1, 28, 28)
            with torch.no_grad():
                res["F.infer"] = timed(lambda: net(x), reps)
    if want("gemm"):
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        res["gemm"] = timed(lambda: a @ b, min(reps, 5))
    return res


def net_f():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10),
    )


def ort_workloads(reps, want, threads, tmp):
    """Inference in ONNX Runtime: the conv forwards, D forward, and F inference."""
    if ort is None:
        return {}
    res = {}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1

    def run(name, module, x):
        path = os.path.join(tmp, name + ".onnx")
        if not os.path.exists(path):
            torch.onnx.export(module, x, path, input_names=["x"], output_names=["y"], opset_version=13)
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        res[name] = timed(lambda: sess.run(None, feed), reps)

    for name, (n, c, h, w, co, k, s, p) in CONV.items():
        if want(name + ".fwd"):
            run(name + ".fwd", nn.Conv2d(c, co, k, s, p, bias=False).eval(), torch.randn(n, c, h, w))
    if want("D.fwd"):
        run("D.fwd", nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False).eval(), torch.randn(64, 64, 7, 7))
    if want("F.infer"):
        run("F.infer", net_f().eval(), torch.randn(256, 1, 28, 28))
    return res


def convnet_workloads(binary, reps, filt, threads):
    cmd = [binary, "--threads", str(threads), "bench", "--json", "--reps", str(reps)]
    if filt:
        cmd += ["--filter", filt]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {k: v["median_ms"] for k, v in json.loads(out).items()}


FLOPS = {}
for _n, _s in CONV.items():
    FLOPS[_n + ".fwd"] = conv_flops(*_s)
    FLOPS[_n + ".fwdbwd"] = 3 * conv_flops(*_s)
FLOPS["DW.fwd"] = conv_flops(64, 64, 28, 28, 64, 3, 1, 1, groups=64)
FLOPS["DW.fwdbwd"] = 3 * FLOPS["DW.fwd"]
FLOPS["C.fwd"] = 10 * 2.0 * 16 * 32 * 2048 * 32 * 2
FLOPS["C.fwdbwd"] = 3 * FLOPS["C.fwd"]
FLOPS["D.fwd"] = 2.0 * 64 * 64 * 7 * 7 * 32 * 16
FLOPS["D.fwdbwd"] = 3 * FLOPS["D.fwd"]
FLOPS["gemm"] = 2.0 * 2048 ** 3
SAMPLES = {"F.train": 128, "F.infer": 256}


def peak_rss_mb(cmd):
    """Peak resident memory (MiB) of `cmd`, measured by GNU time in its own process."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, check=True, capture_output=True, text=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--filter", default="")
    ap.add_argument("--binary", default="target/release/convnet")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--only-torch-f-train", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.only_torch_f_train:
        torch_workloads(1, lambda n: n.startswith("F.train") or n == "F.")
        return
    want = lambda name: (not a.filter) or (a.filter in name) or name.startswith(a.filter)
    tmp = os.path.join("target", "bench-onnx")
    os.makedirs(tmp, exist_ok=True)
    runs = {"convnet": [], "pytorch": [], "onnxruntime": []}
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
        runs["convnet"].append(convnet_workloads(a.binary, a.reps, a.filter, a.threads))
        runs["pytorch"].append(torch_workloads(a.reps, want))
        runs["onnxruntime"].append(ort_workloads(a.reps, want, a.threads, tmp))
    med = {k: {} for k in runs}
    for peer, rs in runs.items():
        for name in rs[0] if rs and rs[0] else []:
            med[peer][name] = statistics.median(r[name] for r in rs if name in r)
    names = [n for n in med["convnet"] if n in med["pytorch"]]
    gemm = med["convnet"].get("gemm")

    def rate(name, ms):
        if name in SAMPLES:
            return f"{SAMPLES[name] / ms * 1e3:.0f}/s"
        if name in FLOPS:
            return f"{FLOPS[name] / ms / 1e6:.1f}"
        return "-"

    head = ["workload", "convnet ms", "PyTorch ms", "ORT ms", "PyTorch / convnet", "ORT / convnet", "convnet GFLOP/s or samples/s", "% of GEMM rate"]
    rows = []
    for n in names:
        c, p, o = med["convnet"][n], med["pytorch"][n], med["onnxruntime"].get(n)
        pct = f"{100 * (FLOPS[n] / c) / (FLOPS['gemm'] / gemm):.0f}%" if (gemm and n in FLOPS and n != "gemm") else "-"
        rows.append([n, f"{c:.3f}", f"{p:.3f}", f"{o:.3f}" if o else "-", f"{p / c:.2f}x", f"{o / c:.2f}x" if o else "-", rate(n, c), pct])
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
        for r in rows:
            print("  ".join(x.ljust(w[i]) for i, x in enumerate(r)))
    if want("F.train"):
        # Peak memory of the F.train run, each peer in its own process.
        c_mb = peak_rss_mb([a.binary, "--threads", str(a.threads), "bench", "--filter", "F.train", "--reps", "1"])
        p_mb = peak_rss_mb([sys.executable, __file__, "--only-torch-f-train", "--threads", str(a.threads)])
        print(f"\npeak resident memory of the F.train run: convnet {c_mb:.0f} MiB, PyTorch {p_mb:.0f} MiB")
    print(f"\nmedians of {a.rounds} interleaved rounds x {a.reps} repetitions; {a.threads} threads; "
          f"torch {torch.__version__}, onnxruntime {ort.__version__ if ort else 'not installed'}")


if __name__ == "__main__":
    main()
