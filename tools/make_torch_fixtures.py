#!/usr/bin/env python3
"""Writes the PyTorch weight fixtures under tests/torch/: for every example spec, the PyTorch
model it corresponds to (an nn.Sequential; blocks as modules of their own), with random
weights saved as PyTorch names them (`<spec>.safetensors`: a state dict, batch norm's int64
`num_batches_tracked` included), and its outputs in eval mode on fixed inputs
(`<spec>.io.safetensors`: `input0`, `output0`, and for a model of any input size `input1`,
`output1` at a second size).

The correspondence is the one convnet's `import-weights` and `export --torch` use (README,
"PyTorch weights"): a layer is one module, except that an uneven padding (causal, `same` with
an even kernel or a stride) is a padding module before the convolution, a transposed
convolution cropped to `same` is followed by a crop, and an activation written inside a
convolution or dense layer is a module after it. A GAN's spec is two models: the generator's
fixtures are `<spec>.*`, the discriminator's `<spec>.discriminator.*`.

Weights are drawn as k / 15 * bound (k an integer in [-15, 15], bound = 1 / sqrt(fan_in)),
values of few significant bits, so that the fixtures compress (they are stored gzipped,
`<spec>.safetensors.gz`); specs of the same layers (fashion_mnist_full, the ItalyPower models)
share the weights of the first, named in the io file's metadata (`weights`). Outputs are
computed in float64 and stored as float32.

With --check-export BIN (a built convnet binary), every fixture also goes the other way: BIN
imports it (`import-weights`), exports it (`export --torch`), and the exported file must load
into the PyTorch model with strict key matching and hold the same values.

Run: python3 tools/make_torch_fixtures.py [--check-export target/release/convnet]
(Debian's python3-torch; Python 3.11 for tomllib.) Made with PyTorch 1.13 (Debian 1.13.1+dfsg-4).
"""
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_file import load, save

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "torch")
SKIP = set()
# models of any input size: (channels, h, w) for the second input
SECOND_SIZE = {"fashion_fcn": (1, 40, 40)}

# ---- the modules convnet's layers correspond to ------------------------------------------

class Crop(nn.Module):
    """Drops `ends[i]` positions at the end of spatial axis i (a transposed convolution
    cropped to `same`)."""

    def __init__(self, ends):
        super().__init__()
        self.ends = ends

    def forward(self, x):
        for i, c in enumerate(self.ends):
            if c:
                x = x.narrow(2 + i, 0, x.shape[2 + i] - c)
        return x


class GlobalPool(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        dims = tuple(range(2, x.dim()))
        return x.mean(dims) if self.kind == "avg" else x.amax(dims)


class Residual(nn.Module):
    """activation(body(x) + shortcut(x)); the shortcut a strided 1x1 convolution when the
    body changes the channels or the size."""

    def __init__(self, body, shortcut, act):
        super().__init__()
        self.body = body
        if shortcut is not None:
            self.shortcut = shortcut
        else:
            self.shortcut = None
        self.act = act

    def forward(self, x):
        s = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.body(x) + s)


class TcnBlock(nn.Module):
    def __init__(self, c_in, f, k, d, pad, act, shortcut):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, f, k, dilation=d)
        self.conv2 = nn.Conv1d(f, f, k, dilation=d)
        if shortcut:
            self.shortcut = nn.Conv1d(c_in, f, 1)
        else:
            self.shortcut = None
        self.pad, self.act = pad, act

    def forward(self, x):
        h = x
        for conv in (self.conv1, self.conv2):
            h = self.act(conv(F.pad(h, self.pad)))
        s = x if self.shortcut is None else self.shortcut(x)
        return self.act(h + s), h


class Tcn(nn.Module):
    def __init__(self, blocks, skips, last):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.skips, self.last = skips, last

    def forward(self, x):
        total = None
        for b in self.blocks:
            x, s = b(x)
            total = s if total is None else total + s
        y = total if self.skips else x
        return y if self.last is None else y[:, :, self.last(y.shape[2])]


class Gated(nn.Module):
    def __init__(self, r, s, k, d, residual):
        super().__init__()
        self.gated = nn.Conv1d(r, 2 * r, k, dilation=d)
        if residual:
            self.residual = nn.Conv1d(r, r, 1)
        else:
            self.residual = None
        self.skip = nn.Conv1d(r, s, 1)
        self.pad = ((k - 1) * d, 0)

    def forward(self, x):
        g = self.gated(F.pad(x, self.pad))
        c = g.shape[1] // 2
        z = torch.tanh(g[:, :c]) * torch.sigmoid(g[:, c:])
        out = x if self.residual is None else x + self.residual(z)
        return out, self.skip(z)


class WaveNet(nn.Module):
    def __init__(self, c_in, cfg):
        super().__init__()
        r, s, k = cfg["residual_channels"], cfg["skip_channels"], cfg["kernel_size"]
        self.input = nn.Conv1d(c_in, r, k)
        dil = cfg["dilations"] * cfg["nb_stacks"]
        self.layers = nn.ModuleList(
            Gated(r, s, k, d, i + 1 < len(dil)) for i, d in enumerate(dil))
        self.head = nn.Conv1d(s, s, 1)
        self.output = nn.Conv1d(s, cfg["output_channels"], 1)
        self.k, self.seqs = k, cfg["return_sequences"]

    def forward(self, x):
        h = self.input(F.pad(x, (self.k - 1, 0)))
        total = None
        for layer in self.layers:
            h, s = layer(h)
            total = s if total is None else total + s
        y = self.output(torch.relu(self.head(torch.relu(total))))
        return y if self.seqs else y[:, :, -1]


# ---- spec -> modules ------------------------------------------------------------------------

def act_module(name, alpha=None):
    return {
        "linear": nn.Identity, "none": nn.Identity, "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(0.01 if alpha is None else alpha),
        "elu": lambda: nn.ELU(1.0 if alpha is None else alpha),
        "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
        "softmax": lambda: nn.Softmax(dim=1), "log_softmax": lambda: nn.LogSoftmax(dim=1),
    }[name]()


def per_dim(v, d):
    return list(v) if isinstance(v, list) else [v] * d


def same_pads(n, k, s, dil):
    out = -(-n // s)
    total = max((out - 1) * s + dil * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def conv_pads(t, d, sizes, k, s, dil):
    p = t.get("padding", "valid")
    if p == "valid":
        return [(0, 0)] * d
    if p == "same":
        return [same_pads(sizes[i], k[i], s[i], dil[i]) for i in range(d)]
    if p == "causal":
        return [(dil[0] * (k[0] - 1), 0)]
    if isinstance(p, int):
        return [(p, p)] * d
    return [(x, x) if isinstance(x, int) else tuple(x) for x in p]


def conv_out(n, k, s, dil, pads):
    return (n + pads[0] + pads[1] - dil * (k - 1) - 1) // s + 1


def build_conv(t, shape, kind):
    d = 1 if "1d" in kind else 2
    k = per_dim(t["kernel_size"], d)
    s = per_dim(t.get("strides", 1), d)
    dil = per_dim(t.get("dilation_rate", 1), d)
    groups, bias = t.get("groups", 1), t.get("use_bias", True)
    c_in, f, sizes = shape[0], t["filters"], shape[1:]
    mods = []
    if "transpose" in kind:
        cls = nn.ConvTranspose1d if d == 1 else nn.ConvTranspose2d
        op = per_dim(t.get("output_padding", 0), d)
        pad, crop = [0] * d, [0] * d
        if t.get("padding", "valid") == "same":
            for i in range(d):
                total = dil[i] * (k[i] - 1) + 1 - s[i]
                if total < 0:
                    op[i] = -total
                else:
                    pad[i], crop[i] = total // 2, total % 2
        elif t.get("padding", "valid") != "valid":
            p = per_dim(t["padding"], d)
            pad = [x if isinstance(x, int) else x[0] for x in p]
        mods.append(cls(c_in, f, k, s, pad, op, groups, bias, dil))
        out = [(sizes[i] - 1) * s[i] - 2 * pad[i] + dil[i] * (k[i] - 1) + op[i] + 1 - crop[i]
               for i in range(d)]
        if any(crop):
            mods.append(Crop(crop))
    else:
        pads = conv_pads(t, d, sizes, k, s, dil)
        if any(a != b for a, b in pads):
            flat = [x for p in reversed(pads) for x in p]
            mods.append((nn.ConstantPad1d if d == 1 else nn.ConstantPad2d)(tuple(flat), 0.0))
            sym = [0] * d
        else:
            sym = [a for a, _ in pads]
        cls = nn.Conv1d if d == 1 else nn.Conv2d
        mods.append(cls(c_in, f, k, s, sym, dil, groups, bias))
        out = [conv_out(sizes[i], k[i], s[i], dil[i], pads[i]) for i in range(d)]
    if t.get("activation", "linear") not in ("linear", "none"):
        mods.append(act_module(t["activation"], t.get("alpha")))
    return mods, [f] + out


def build_layer(t, shape):
    """The modules of layer `t` on per-sample `shape`, and its output shape."""
    kind = t["type"]
    if kind.startswith("conv"):
        return build_conv(t, shape, kind)
    if kind in ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d"):
        d = 1 if "1d" in kind else 2
        k = per_dim(t["pool_size"], d)
        s = per_dim(t.get("strides", t["pool_size"]), d)
        if t.get("padding", "valid") != "valid":
            raise SystemExit(f"{kind}: only valid padding here")
        ceil = t.get("ceil_mode", False)
        if kind.startswith("max"):
            m = (nn.MaxPool1d if d == 1 else nn.MaxPool2d)(k, s, 0, ceil_mode=ceil)
        else:
            m = (nn.AvgPool1d if d == 1 else nn.AvgPool2d)(
                k, s, 0, ceil, t.get("count_include_pad", True))
        rnd = math.ceil if ceil else math.floor
        out = [int(rnd((shape[1 + i] - k[i]) / s[i])) + 1 for i in range(d)]
        return [m], [shape[0]] + out
    if kind in ("global_avg_pool", "global_max_pool"):
        return [GlobalPool(kind.split("_")[1])], [shape[0]]
    if kind == "dense":
        mods = [nn.Linear(shape[-1], t["units"], t.get("use_bias", True))]
        if t.get("activation", "linear") not in ("linear", "none"):
            mods.append(act_module(t["activation"], t.get("alpha")))
        return mods, shape[:-1] + [t["units"]]
    if kind in ("dropout", "spatial_dropout"):
        return [nn.Dropout(t["rate"])], shape
    if kind == "batch_norm":
        cls = nn.BatchNorm1d if len(shape) <= 2 else nn.BatchNorm2d
        return [cls(shape[0], t.get("epsilon", 1e-5), t.get("momentum", 0.1))], shape
    if kind == "flatten":
        return [nn.Flatten()], [math.prod(shape)]
    if kind == "activation":
        return [act_module(t["activation"], t.get("alpha"))], shape
    if kind == "reshape":
        target = list(t["target_shape"])
        if -1 in target:
            i = target.index(-1)
            target[i] = math.prod(shape) // -math.prod(target)
        return [nn.Unflatten(1, tuple(target))], target
    if kind == "residual":
        body, out = chain(t["layers"], shape)
        stride = [-(-shape[i] // out[i]) for i in range(1, len(shape))]
        shortcut = None
        if out[0] != shape[0] or any(x != 1 for x in stride):
            cls = nn.Conv1d if len(shape) == 2 else nn.Conv2d
            shortcut = cls(shape[0], out[0], 1, stride)
        act = act_module(t.get("activation", "linear"), t.get("alpha"))
        return [Residual(body, shortcut, act)], out
    if kind == "tcn":
        f, k = t.get("nb_filters", 64), t.get("kernel_size", 3)
        dil = t.get("dilations", [1, 2, 4, 8, 16, 32]) * t.get("nb_stacks", 1)
        # (dropout is the identity in eval mode)
        if t.get("normalization", "none") != "none":
            raise SystemExit("tcn: normalization is not mapped here")
        same = t.get("padding", "causal") == "same"
        blocks, c = [], shape[0]
        for d in dil:
            total = d * (k - 1)
            pad = (total // 2, total - total // 2) if same else (total, 0)
            blocks.append(TcnBlock(c, f, k, d, pad, act_module(t.get("activation", "relu")),
                                   c != f))
            c = f
        seqs = t.get("return_sequences", False)
        last = None if seqs else ((lambda n: n // 2) if same else (lambda n: n - 1))
        return [Tcn(blocks, t.get("use_skip_connections", True), last)], \
            ([f, shape[1]] if seqs else [f])
    if kind == "wavenet":
        n = t.get("layers_per_stack")
        cfg = {
            "residual_channels": t.get("residual_channels", 32),
            "skip_channels": t.get("skip_channels", 32),
            "output_channels": t.get("output_channels", 1),
            "kernel_size": t.get("kernel_size", 2),
            "dilations": t.get("dilations", [1 << i for i in range(n if n else 10)]),
            "nb_stacks": t.get("nb_stacks", 1),
            "return_sequences": t.get("return_sequences", False),
        }
        o = cfg["output_channels"]
        return [WaveNet(shape[0], cfg)], ([o, shape[1]] if cfg["return_sequences"] else [o])
    raise SystemExit(f"layer type {kind} is not mapped here")


def chain(layers, shape):
    mods = []
    for t in layers:
        m, shape = build_layer(t, shape)
        mods.extend(m)
    return nn.Sequential(*mods), shape


def nominal(input_shape):
    # convnet builds an "any" size at 64 (spec::ANY_NOMINAL)
    return [64 if d == "any" else d for d in input_shape]


# ---- weights, inputs, outputs ---------------------------------------------------------------

def fill(model, gen):
    for name, p in model.state_dict().items():
        if p.dtype != torch.float32:
            p.fill_(int(torch.randint(0, 1000, (1,), generator=gen)))  # num_batches_tracked
            continue
        fan_in = p[0].numel() if p.dim() > 1 else max(p.numel(), 1)
        k = torch.randint(-15, 16, p.shape, generator=gen).float() / 15
        if name.endswith("running_var"):
            p.copy_(0.5 + (k + 1) / 2)
        elif name.endswith("running_mean"):
            p.copy_(0.25 * k)
        elif name.endswith("weight") and p.dim() == 1:
            p.copy_(1 + 0.25 * k)
        else:
            p.copy_(k / math.sqrt(fan_in))


def main():
    check = None
    if "--check-export" in sys.argv:
        check = sys.argv[sys.argv.index("--check-export") + 1]
    os.makedirs(OUT, exist_ok=True)
    examples = os.path.join(ROOT, "examples")
    made = {}  # the layers of a spec -> the spec whose weights they are
    for file in sorted(os.listdir(examples)):
        name, ext = os.path.splitext(file)
        if ext != ".toml" or name in SKIP:
            continue
        with open(os.path.join(examples, file), "rb") as f:
            spec = tomllib.load(f)
        if "generator" in spec:
            generator = make(name, spec["generator"], made)
            make(f"{name}.discriminator", spec["discriminator"], made)
            if check:
                # the run holds both; export --torch writes the generator
                check_export(check, os.path.join(examples, file),
                             os.path.join(OUT, f"{name}.safetensors.gz"), generator,
                             os.path.join(OUT, f"{name}.discriminator.safetensors.gz"))
            continue
        model = make(name, spec["model"], made)
        if check:
            check_export(check, os.path.join(examples, file),
                         os.path.join(OUT, f"{made[key_of(spec['model'])]}.safetensors.gz"), model)


def key_of(table):
    return json.dumps([table["input"][0], table["layers"]], sort_keys=True)


def make(name, table, made):
    """The fixtures of the model `table` describes, named `name`; returns the model."""
    shape = nominal(table["input"])
    model, _ = chain(table["layers"], shape)
    owner = made.setdefault(key_of(table), name)
    gen = torch.Generator().manual_seed(sum(map(ord, owner)))
    with torch.no_grad():
        fill(model, gen)
    model.eval()
    io = {}
    sizes = [shape] + ([list(SECOND_SIZE[name])] if name in SECOND_SIZE else [])
    for i, s in enumerate(sizes):
        x = (torch.randint(-64, 65, [2] + s, generator=gen).float() / 32)
        with torch.no_grad():
            y = model.double()(x.double()).float()
        model.float()
        io[f"input{i}"], io[f"output{i}"] = x, y
    weights = os.path.join(OUT, f"{owner}.safetensors.gz")
    if owner == name:
        with tempfile.TemporaryDirectory() as d:
            plain = os.path.join(d, "w.safetensors")
            save(plain, dict(model.state_dict()), {"format": "pt"})
            with open(plain, "rb") as f, gzip.GzipFile(weights, "wb", 9, mtime=0) as g:
                g.write(f.read())
    save(os.path.join(OUT, f"{name}.io.safetensors"), io,
         {"weights": os.path.basename(weights)})
    print(f"{name}: {sum(p.numel() for p in model.state_dict().values())} values"
          + ("" if owner == name else f" (the weights of {owner})"))
    return model


def check_export(binary, spec, packed, model, discriminator=None):
    """convnet imports the fixture and exports it; PyTorch loads the export strictly."""
    with tempfile.TemporaryDirectory() as d:
        run, back = os.path.join(d, "run"), os.path.join(d, "back.safetensors")
        weights = os.path.join(d, "weights.safetensors")
        with gzip.open(packed, "rb") as g, open(weights, "wb") as f:
            f.write(g.read())
        extra = []
        if discriminator:
            extra = ["--discriminator", os.path.join(d, "discriminator.safetensors")]
            with gzip.open(discriminator, "rb") as g, open(extra[1], "wb") as f:
                f.write(g.read())
        r = subprocess.run([binary, "import-weights", spec, weights, "--out", run] + extra,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0 and "No such file" in r.stderr:
            # import-weights fits the normalisation on the spec's data, absent here
            print(f"  not checked: {r.stderr.strip()}")
            return
        if r.returncode != 0:
            raise SystemExit(f"{spec}: {r.stderr}")
        subprocess.run([binary, "export", run, "--torch", back], check=True,
                       stdout=subprocess.DEVNULL)
        state = load(back)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state, strict=True)
        for k, v in model.state_dict().items():
            if v.dtype == torch.float32 and not torch.equal(v, before[k]):
                raise SystemExit(f"{spec}: {k} changed in the round trip")
        print(f"  exported back and loaded strictly: {len(state)} tensors")


if __name__ == "__main__":
    main()
