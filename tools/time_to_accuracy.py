#!/usr/bin/python3
"""Time to accuracy: convnet and PyTorch train the same network with the same recipe on the
same machine, and each records its test accuracy after every epoch against the wall time of
its training (steps and the validation pass; the test evaluation itself is not counted).

    tools/time_to_accuracy.py [--spec examples/fashion_mnist_fast.toml] [--seeds 1 2 3]
                              [--epochs N] [--threads 2] [--out DIR] [--only convnet|torch]

The PyTorch side (Debian's python3-torch, `torch.set_num_threads(THREADS)`) builds its model
from the spec's layers (conv2d, batch_norm, activation relu, max_pool2d, flatten, dense,
dropout) and follows its [train] recipe: Adam under OneCycleLR stepped per batch (beta1
cycled, as convnet does), label smoothing, an exponential moving average of the weights and
buffers (AveragedModel with use_buffers=True), horizontal flips in training and flip
test-time augmentation, the same validation split and standardisation. convnet runs
`convnet train SPEC --seed S --test-curve`. `--epochs` overrides [train] epochs on both sides
(the one-cycle schedule stretches with it).

Writes OUT/curves.csv (framework, seed, epoch, seconds, test accuracy), OUT/table.md (seconds
to each accuracy, median over seeds), OUT/curves.svg (test accuracy against wall time).
"""

import argparse
import csv
import gzip
import os
import statistics
import struct
import subprocess
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = [0.90, 0.91, 0.92, 0.93]


def read_idx(path):
    import numpy as np

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def torch_model(spec, torch):
    """The spec's layers as a torch.nn.Sequential (the layer kinds the fast recipes use)."""
    nn = torch.nn
    c, h, w = spec["model"]["input"]
    layers = []
    for l in spec["model"]["layers"]:
        t = l["type"]
        if t == "conv2d":
            k = l["kernel_size"]
            pad = k // 2 if l.get("padding") == "same" else 0
            layers.append(nn.Conv2d(c, l["filters"], k, padding=pad, bias=l.get("use_bias", True)))
            c = l["filters"]
            h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
            if l.get("activation", "linear") == "relu":
                layers.append(nn.ReLU())
        elif t == "batch_norm":
            layers.append(nn.BatchNorm2d(c))
        elif t == "activation":
            assert l["activation"] == "relu", l
            layers.append(nn.ReLU())
        elif t == "max_pool2d":
            p = l["pool_size"]
            layers.append(nn.MaxPool2d(p))
            h, w = h // p, w // p
        elif t == "flatten":
            layers.append(nn.Flatten())
            c, h, w = c * h * w, 1, 1
        elif t == "dense":
            layers.append(nn.Linear(c, l["units"]))
            c = l["units"]
            if l.get("activation", "linear") == "relu":
                layers.append(nn.ReLU())
        elif t == "dropout":
            layers.append(nn.Dropout(l["rate"]))
        else:
            raise SystemExit(f"time_to_accuracy.py: layer type {t} is not translated")
    return nn.Sequential(*layers)


def run_torch(spec, seed, threads):
    import numpy as np
    import torch
    from torch.optim.swa_utils import AveragedModel

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    d, t = spec["data"], spec["train"]
    x = read_idx(d["train_images"]).astype(np.float32) / 255.0
    y = read_idx(d["train_labels"]).astype(np.int64)
    xt = read_idx(d["test_images"]).astype(np.float32) / 255.0
    yt = read_idx(d["test_labels"]).astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = int(round(len(x) * d.get("validation_split", 0.0)))
    val, tr = order[:n_val], order[n_val:]
    mean, std = x[tr].mean(), x[tr].std()
    norm = lambda a: torch.from_numpy(((a - mean) / std)[:, None, :, :].copy())
    xtr, ytr = norm(x[tr]), torch.from_numpy(y[tr])
    xva, yva = norm(x[val]), torch.from_numpy(y[val])
    xte, yte = norm(xt), torch.from_numpy(yt)
    model = torch_model(spec, torch)
    opt_spec, sched = t["optimizer"], t.get("schedule", {})
    assert opt_spec["type"] == "adam" and sched.get("type") == "one_cycle", (opt_spec, sched)
    opt = torch.optim.Adam(model.parameters(), lr=opt_spec["lr"])
    epochs, batch = t["epochs"], t["batch_size"]
    steps = (len(tr) + batch - 1) // batch
    cycle = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=sched.get("max_lr", opt_spec["lr"]),
        total_steps=epochs * steps,
        pct_start=sched.get("pct_start", 0.3),
        div_factor=sched.get("div_factor", 25.0),
        final_div_factor=sched.get("final_div_factor", 1e4),
    )
    decay = t.get("ema", {}).get("decay")
    avg = None
    if decay is not None:
        avg = AveragedModel(
            model, avg_fn=lambda a, m, n: decay * a + (1 - decay) * m, use_buffers=True
        )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=t.get("label_smoothing", 0.0))
    hflip = spec["data"].get("augment", {}).get("hflip", 0.0)
    tta = "hflip" in t.get("tta", [])

    def accuracy(m, xs, ys):
        m.eval()
        hits = 0
        with torch.no_grad():
            for i in range(0, len(xs), 256):
                xb = xs[i : i + 256]
                p = torch.softmax(m(xb), 1)
                if tta:
                    p = (p + torch.softmax(m(xb.flip(-1)), 1)) / 2
                hits += (p.argmax(1) == ys[i : i + 256]).sum().item()
        return hits / len(xs)

    rows, spent = [], 0.0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.train()
        perm = torch.randperm(len(xtr))
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            xb, yb = xtr[idx], ytr[idx]
            if hflip > 0:
                flip = torch.rand(len(idx)) < hflip
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
            cycle.step()
            if avg is not None:
                avg.update_parameters(model)
        evaluated = avg.module if avg is not None else model
        accuracy(evaluated, xva, yva)
        spent += time.perf_counter() - started
        rows.append((epoch, spent, accuracy(evaluated, xte, yte)))
        print(f"torch seed {seed} epoch {epoch}: {spent:.1f} s, test {rows[-1][2]:.4f}", flush=True)
    return rows


def run_convnet(spec_path, seed, out, threads, epochs):
    binary = os.path.join(ROOT, "target", "release", "convnet")
    run_dir = os.path.join(out, f"convnet-seed{seed}")
    cmd = [binary, "--threads", str(threads), "train", spec_path, "--seed", str(seed),
           "--out", run_dir, "--overwrite", "--test-curve"]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    subprocess.run(cmd, check=True, stdout=sys.stdout, stderr=sys.stderr)
    rows, spent = [], 0.0
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        for r in csv.DictReader(f):
            spent += float(r["seconds"])
            rows.append((int(r["epoch"]), spent, float(r["test_acc"])))
    return rows


def time_to(rows, level):
    for _, secs, acc in rows:
        if acc >= level:
            return secs
    return None


def svg(curves, path):
    """Test accuracy against wall time, one polyline per run, coloured by framework."""
    width, height, pad = 640, 400, 50
    pts = [p for rows in curves.values() for p in rows]
    tmax = max(s for _, s, _ in pts) * 1.05
    lo = min(0.85, min(a for _, _, a in pts))
    hi = max(0.94, max(a for _, _, a in pts))
    fx = lambda s: pad + s / tmax * (width - 2 * pad)
    fy = lambda a: height - pad - (a - lo) / (hi - lo) * (height - 2 * pad)
    colors = {"convnet": "#1f77b4", "torch": "#ff7f0e"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for a in [x / 100 for x in range(int(lo * 100), int(hi * 100) + 1)]:
        out.append(f'<line x1="{pad}" x2="{width - pad}" y1="{fy(a):.1f}" y2="{fy(a):.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{pad - 6}" y="{fy(a) + 4:.1f}" text-anchor="end">{a:.0%}</text>')
    step = 10 if tmax < 120 else 30 if tmax < 400 else 60
    for s in range(0, int(tmax) + 1, step):
        out.append(f'<text x="{fx(s):.1f}" y="{height - pad + 16}" text-anchor="middle">{s}</text>')
    out.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">'
               'training wall time (s)</text>')
    out.append(f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
               'text-anchor="middle">test accuracy</text>')
    for (fw, seed), rows in curves.items():
        line = " ".join(f"{fx(s):.1f},{fy(a):.1f}" for _, s, a in rows)
        out.append(f'<polyline points="{line}" fill="none" stroke="{colors[fw]}" '
                   'stroke-width="1.5" opacity="0.8"/>')
        for _, s, a in rows:  # one mark per epoch
            out.append(f'<circle cx="{fx(s):.1f}" cy="{fy(a):.1f}" r="2.5" fill="{colors[fw]}"/>')
    for i, (fw, c) in enumerate(colors.items()):
        if any(k[0] == fw for k in curves):
            name = "PyTorch" if fw == "torch" else fw
            out.append(f'<text x="{pad + 10}" y="{pad + 14 + 16 * i}" fill="{c}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="examples/fashion_mnist_fast.toml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, help="override [train] epochs on both sides")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="target/time_to_accuracy")
    ap.add_argument("--only", choices=["convnet", "torch"])
    ap.add_argument("--replot", action="store_true",
                    help="no training: the table and plot again from OUT/curves.csv")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(a.spec, "rb") as f:
        spec = tomllib.load(f)
    if a.epochs:
        spec["train"]["epochs"] = a.epochs
    curves = {}
    if a.replot:
        with open(os.path.join(a.out, "curves.csv")) as f:
            for r in csv.DictReader(f):
                key = (r["framework"], int(r["seed"]))
                row = (int(r["epoch"]), float(r["seconds"]), float(r["test_acc"]))
                curves.setdefault(key, []).append(row)
        a.seeds = sorted({seed for _, seed in curves})
    else:
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    for seed in [] if a.replot else a.seeds:
        if a.only != "torch":
            curves[("convnet", seed)] = run_convnet(a.spec, seed, a.out, a.threads, a.epochs)
        if a.only != "convnet":
            curves[("torch", seed)] = run_torch(spec, seed, a.threads)
    with open(os.path.join(a.out, "curves.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["framework", "seed", "epoch", "seconds", "test_acc"])
        for (fw, seed), rows in curves.items():
            for e, s, acc in rows:
                w.writerow([fw, seed, e, f"{s:.2f}", f"{acc:.4f}"])
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    epochs = spec["train"]["epochs"]
    lines = [f"{a.spec}, {epochs} epochs, seeds {a.seeds}, {a.threads} threads, {cpu}", "",
             "| | " + " | ".join(f"s to {l:.0%}" for l in LEVELS) + " | final test acc |",
             "| --- |" + " --- |" * (len(LEVELS) + 1)]
    for fw in ["convnet", "torch"]:
        runs = [rows for (f, _), rows in curves.items() if f == fw]
        if not runs:
            continue
        cells = []
        for level in LEVELS:
            times = [time_to(r, level) for r in runs]
            got = [t for t in times if t is not None]
            cell = f"{statistics.median(got):.1f}" if got else "-"
            if got and len(got) < len(times):
                cell += f" ({len(got)} of {len(times)} runs)"
            cells.append(cell)
        finals = [r[-1][2] for r in runs]
        name = "PyTorch" if fw == "torch" else "convnet"
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {statistics.mean(finals):.2%} (mean of {len(finals)}) |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table)
    svg(curves, os.path.join(a.out, "curves.svg"))
    print(table)


if __name__ == "__main__":
    main()
