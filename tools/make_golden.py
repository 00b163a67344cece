#!/usr/bin/env python3
"""Writes the golden fixtures under tests/golden/: for each case, the inputs, PyTorch's output
and the gradients of every input for the upstream gradient `gout`, as a safetensors file whose
metadata holds the op name and its settings as JSON.

PyTorch computes in float64 from float32 inputs, so the fixtures hold the exact answer rounded
to f32. Where PyTorch lacks a mode (causal padding, TensorFlow's `same` with stride > 1, or
asymmetric padding), the case composes it from an explicit F.pad and a valid convolution: that
composition is what convnet's semantics are pinned to.

Run: python3 tools/make_golden.py   (Debian's python3-torch; no other package needed)
Made with PyTorch 1.13 (Debian 1.13.1+dfsg-4).
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")


def save(path, tensors, metadata):
    """Minimal safetensors writer (the format: u64 header length, JSON header, raw data)."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        raw = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


CASES = []


def case(name, op, cfg, inputs, fn, grads=True):
    CASES.append((name, op, cfg, inputs, fn, grads))


def rnd(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def same_pads(n, k, s, d):
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def conv2d_ref(x, w, b, stride, pads, dilation, groups, mode):
    # pads: [(top, bottom), (left, right)]; F.pad takes the last dimension first
    (pt, pb), (pl, pr) = pads
    if mode == "zeros":
        x = F.pad(x, (pl, pr, pt, pb))
    else:
        x = F.pad(x, (pl, pr, pt, pb), mode=MODE[mode])
    return F.conv2d(x, w, b, stride=stride, dilation=dilation, groups=groups)


def conv1d_ref(x, w, b, stride, pads, dilation, groups, mode):
    (pl, pr) = pads
    x = F.pad(x, (pl, pr)) if mode == "zeros" else F.pad(x, (pl, pr), mode=MODE[mode])
    return F.conv1d(x, w, b, stride=stride, dilation=dilation, groups=groups)


def add_conv_cases():
    torch.manual_seed(1)
    grid2d = [
        # name, (n, cin, h, w, cout, kh, kw), stride, padding, dilation, groups, mode, bias
        ("valid", (2, 3, 7, 6, 4, 3, 3), [1, 1], "valid", [1, 1], 1, "zeros", True),
        ("stride2_valid_odd", (2, 3, 9, 8, 5, 3, 2), [2, 2], "valid", [1, 1], 1, "zeros", True),
        ("same", (2, 3, 7, 6, 4, 3, 3), [1, 1], "same", [1, 1], 1, "zeros", True),
        ("stride2_same_even_kernel", (2, 3, 9, 8, 4, 4, 2), [2, 2], "same", [1, 1], 1, "zeros", True),
        ("stride3_same", (1, 2, 10, 11, 3, 3, 5), [3, 2], "same", [1, 1], 1, "zeros", False),
        ("dilation2_same", (2, 2, 9, 9, 3, 3, 3), [1, 1], "same", [2, 2], 1, "zeros", True),
        ("dilation_stride", (1, 2, 11, 10, 2, 3, 2), [2, 1], [[1, 2], [0, 3]], [2, 3], 1, "zeros", True),
        ("explicit_asym", (2, 3, 6, 7, 2, 3, 3), [1, 2], [[0, 2], [1, 0]], [1, 1], 1, "zeros", True),
        ("groups2", (2, 4, 7, 7, 6, 3, 3), [1, 1], [[1, 1], [1, 1]], [1, 1], 2, "zeros", True),
        ("groups3_stride2", (1, 6, 8, 9, 3, 2, 3), [2, 2], "same", [1, 1], 3, "zeros", True),
        ("depthwise", (2, 4, 8, 7, 4, 3, 3), [1, 1], [[1, 1], [1, 1]], [1, 1], 4, "zeros", True),
        ("depthwise_mult2_stride2", (2, 3, 9, 8, 6, 3, 3), [2, 2], "same", [1, 1], 3, "zeros", False),
        ("pointwise", (2, 5, 6, 7, 4, 1, 1), [1, 1], "valid", [1, 1], 1, "zeros", True),
        ("reflect", (2, 3, 6, 7, 4, 3, 3), [1, 1], [[1, 1], [2, 1]], [1, 1], 1, "reflect", True),
        ("replicate_same", (2, 3, 6, 7, 4, 3, 3), [2, 1], "same", [1, 1], 1, "replicate", True),
        ("circular", (1, 2, 5, 6, 3, 3, 3), [1, 1], [[1, 1], [1, 1]], [1, 1], 1, "circular", True),
        ("kernel_equals_input", (2, 3, 4, 5, 2, 4, 5), [1, 1], "valid", [1, 1], 1, "zeros", True),
    ]
    for name, (n, cin, h, w_, cout, kh, kw), stride, padding, dilation, groups, mode, bias in grid2d:
        x = rnd(n, cin, h, w_)
        w = rnd(cout, cin // groups, kh, kw)
        b = rnd(cout) if bias else None
        if padding == "valid":
            pads = [[0, 0], [0, 0]]
        elif padding == "same":
            pads = [list(same_pads(h, kh, stride[0], dilation[0])), list(same_pads(w_, kw, stride[1], dilation[1]))]
        else:
            pads = padding
        cfg = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "pad_mode": mode}
        inputs = {"x": x, "w": w}
        if b is not None:
            inputs["b"] = b
        case(
            "conv2d_" + name,
            "conv2d",
            cfg,
            inputs,
            lambda t, s=stride, p=pads, d=dilation, g=groups, m=mode: conv2d_ref(t["x"], t["w"], t.get("b"), s, p, d, g, m),
        )

    grid1d = [
        ("valid", (2, 3, 11, 4, 3), 1, "valid", 1, 1, "zeros", True),
        ("causal", (2, 3, 10, 4, 3), 1, "causal", 1, 1, "zeros", True),
        ("causal_dilation4", (2, 2, 16, 3, 2), 1, "causal", 4, 1, "zeros", True),
        ("same_stride2_even", (2, 3, 11, 4, 4), 2, "same", 1, 1, "zeros", True),
        ("explicit_asym_stride3", (1, 2, 13, 3, 3), 3, [[2, 0]], 2, 1, "zeros", False),
        ("groups2_dilation2", (2, 4, 12, 6, 3), 1, "same", 2, 2, "zeros", True),
        ("depthwise", (2, 3, 9, 3, 3), 1, "same", 1, 3, "zeros", True),
        ("reflect", (2, 2, 8, 3, 3), 1, [[2, 1]], 1, 1, "reflect", True),
        ("replicate_causal", (2, 2, 8, 3, 3), 1, "causal", 2, 1, "replicate", True),
    ]
    for name, (n, cin, l, cout, k), stride, padding, dilation, groups, mode, bias in grid1d:
        x = rnd(n, cin, l)
        w = rnd(cout, cin // groups, k)
        b = rnd(cout) if bias else None
        if padding == "valid":
            pads = (0, 0)
        elif padding == "same":
            pads = same_pads(l, k, stride, dilation)
        elif padding == "causal":
            pads = (dilation * (k - 1), 0)
        else:
            pads = tuple(padding[0])
        cfg = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "pad_mode": mode}
        inputs = {"x": x, "w": w}
        if b is not None:
            inputs["b"] = b
        case(
            "conv1d_" + name,
            "conv1d",
            cfg,
            inputs,
            lambda t, s=stride, p=pads, d=dilation, g=groups, m=mode: conv1d_ref(t["x"], t["w"], t.get("b"), s, p, d, g, m),
        )

    tgrid = [
        ("stride2_pad1", (2, 4, 4, 5, 3, 4, 4), [2, 2], [1, 1], [0, 0], [1, 1], 1, True),
        ("stride2_outpad1", (2, 3, 3, 4, 2, 3, 3), [2, 2], [1, 1], [1, 1], [1, 1], 1, True),
        ("dilation2_groups2", (1, 4, 4, 3, 6, 3, 2), [1, 2], [0, 1], [0, 1], [2, 1], 2, True),
        ("depthwise_stride3", (2, 3, 3, 3, 3, 3, 3), [3, 3], [0, 1], [2, 0], [1, 1], 3, False),
        ("dilation_outpad", (1, 2, 3, 4, 2, 2, 3), [1, 1], [0, 0], [1, 0], [2, 1], 1, True),
    ]
    for name, (n, cin, h, w_, cout, kh, kw), stride, padding, outpad, dilation, groups, bias in tgrid:
        x = rnd(n, cin, h, w_)
        w = rnd(cin, cout // groups, kh, kw)
        b = rnd(cout) if bias else None
        cfg = {"stride": stride, "padding": padding, "output_padding": outpad, "dilation": dilation, "groups": groups}
        inputs = {"x": x, "w": w}
        if b is not None:
            inputs["b"] = b
        case(
            "conv_transpose2d_" + name,
            "conv_transpose2d",
            cfg,
            inputs,
            lambda t, s=stride, p=padding, o=outpad, d=dilation, g=groups: F.conv_transpose2d(
                t["x"], t["w"], t.get("b"), stride=s, padding=p, output_padding=o, dilation=d, groups=g
            ),
        )
    t1 = [
        ("stride2", (2, 3, 7, 4, 4), 2, 1, 1, 1, 1, True),
        ("dilation3_groups3", (1, 3, 5, 6, 3), 1, 2, 0, 3, 3, True),
    ]
    for name, (n, cin, l, cout, k), stride, padding, outpad, dilation, groups, bias in t1:
        x = rnd(n, cin, l)
        w = rnd(cin, cout // groups, k)
        b = rnd(cout) if bias else None
        cfg = {"stride": stride, "padding": padding, "output_padding": outpad, "dilation": dilation, "groups": groups}
        inputs = {"x": x, "w": w}
        if b is not None:
            inputs["b"] = b
        case(
            "conv_transpose1d_" + name,
            "conv_transpose1d",
            cfg,
            inputs,
            lambda t, s=stride, p=padding, o=outpad, d=dilation, g=groups: F.conv_transpose1d(
                t["x"], t["w"], t.get("b"), stride=s, padding=p, output_padding=o, dilation=d, groups=g
            ),
        )


def distinct(*shape):
    """Values with no ties, so that max pooling's argmax is unambiguous."""
    n = math.prod(shape)
    return (torch.randperm(n).to(torch.float32) * 0.37 - n * 0.15).reshape(shape)


def add_pool_cases():
    torch.manual_seed(2)
    for name, shape, k, s, p, ceil in [
        ("2x2", (2, 3, 8, 6), [2, 2], None, [0, 0], False),
        ("3x3_stride2_pad1", (2, 2, 9, 8), [3, 3], [2, 2], [1, 1], False),
        ("3x2_stride2_ceil", (1, 3, 8, 7), [3, 2], [2, 2], [1, 0], True),
        ("stride1_overlap", (2, 2, 5, 6), [2, 3], [1, 1], [0, 1], False),
    ]:
        x = distinct(*shape)
        cfg = {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil}
        case("max_pool2d_" + name, "max_pool2d", cfg, {"x": x},
             lambda t, k=k, s=s, p=p, c=ceil: F.max_pool2d(t["x"], k, s, p, ceil_mode=c))
        for inc in [True, False]:
            cfg2 = dict(cfg, count_include_pad=inc)
            case("avg_pool2d_" + name + ("_incpad" if inc else "_nopad"), "avg_pool2d", cfg2, {"x": rnd(*shape)},
                 lambda t, k=k, s=s, p=p, c=ceil, i=inc: F.avg_pool2d(t["x"], k, s, p, ceil_mode=c, count_include_pad=i))
    for name, shape, k, s, p, ceil in [
        ("2", (2, 3, 9), 2, None, 0, False),
        ("3_stride2_pad1_ceil", (2, 2, 10), 3, 2, 1, True),
        ("4_stride3", (1, 2, 13), 4, 3, 2, False),
    ]:
        x = distinct(*shape)
        cfg = {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil}
        case("max_pool1d_" + name, "max_pool1d", cfg, {"x": x},
             lambda t, k=k, s=s, p=p, c=ceil: F.max_pool1d(t["x"], k, s, p, ceil_mode=c))
        for inc in [True, False]:
            cfg2 = dict(cfg, count_include_pad=inc)
            case("avg_pool1d_" + name + ("_incpad" if inc else "_nopad"), "avg_pool1d", cfg2, {"x": rnd(*shape)},
                 lambda t, k=k, s=s, p=p, c=ceil, i=inc: F.avg_pool1d(t["x"], k, s, p, ceil_mode=c, count_include_pad=i))
    case("global_avg_pool2d", "global_avg_pool2d", {}, {"x": rnd(2, 3, 5, 4)}, lambda t: t["x"].mean(dim=(2, 3)))
    case("global_avg_pool1d", "global_avg_pool1d", {}, {"x": rnd(2, 3, 7)}, lambda t: t["x"].mean(dim=2))
    case("global_max_pool2d", "global_max_pool2d", {}, {"x": distinct(2, 3, 5, 4)}, lambda t: t["x"].amax(dim=(2, 3)))
    case("global_max_pool1d", "global_max_pool1d", {}, {"x": distinct(2, 3, 7)}, lambda t: t["x"].amax(dim=2))
    case("adaptive_avg_pool2d_7x5_to_3x2", "adaptive_avg_pool2d", {"output_size": [3, 2]}, {"x": rnd(2, 2, 7, 5)},
         lambda t: F.adaptive_avg_pool2d(t["x"], (3, 2)))
    case("adaptive_avg_pool2d_4x4_to_6x5", "adaptive_avg_pool2d", {"output_size": [6, 5]}, {"x": rnd(1, 2, 4, 4)},
         lambda t: F.adaptive_avg_pool2d(t["x"], (6, 5)))
    case("adaptive_avg_pool1d_10_to_4", "adaptive_avg_pool1d", {"output_size": 4}, {"x": rnd(2, 3, 10)},
         lambda t: F.adaptive_avg_pool1d(t["x"], 4))


def add_dense_cases():
    torch.manual_seed(3)
    case("linear", "linear", {}, {"x": rnd(5, 7), "w": rnd(4, 7), "b": rnd(4)}, lambda t: F.linear(t["x"], t["w"], t["b"]))
    case("linear_3d_nobias", "linear", {}, {"x": rnd(2, 3, 6), "w": rnd(5, 6)}, lambda t: F.linear(t["x"], t["w"]))
    case("matmul", "matmul", {}, {"a": rnd(4, 6), "b": rnd(6, 3)}, lambda t: t["a"] @ t["b"])
    case("matmul_batched", "matmul", {}, {"a": rnd(2, 3, 5), "b": rnd(2, 5, 4)}, lambda t: t["a"] @ t["b"])
    for op, fn in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul)]:
        case(op + "_broadcast", op, {}, {"a": rnd(2, 3, 4), "b": rnd(3, 1)}, lambda t, f=fn: f(t["a"], t["b"]))
        case(op + "_same", op, {}, {"a": rnd(3, 4), "b": rnd(3, 4)}, lambda t, f=fn: f(t["a"], t["b"]))
    case("div_broadcast", "div", {}, {"a": rnd(2, 1, 4), "b": rnd(3, 1).abs() + 0.5}, lambda t: t["a"] / t["b"])
    case("sum_axes", "sum", {"axes": [0, 2], "keepdim": False}, {"x": rnd(2, 3, 4)}, lambda t: t["x"].sum(dim=(0, 2)))
    case("sum_keepdim", "sum", {"axes": [-1], "keepdim": True}, {"x": rnd(2, 3, 4)}, lambda t: t["x"].sum(dim=-1, keepdim=True))
    case("mean_axes", "mean", {"axes": [1], "keepdim": False}, {"x": rnd(2, 5, 3)}, lambda t: t["x"].mean(dim=1))
    case("mean_all", "mean_all", {}, {"x": rnd(3, 4)}, lambda t: t["x"].mean())
    case("sum_all", "sum_all", {}, {"x": rnd(3, 4)}, lambda t: t["x"].sum())
    case("reshape", "reshape", {"shape": [4, 6]}, {"x": rnd(2, 3, 4)}, lambda t: t["x"].reshape(4, 6))
    case("flatten", "flatten", {"start": 1, "end": 3}, {"x": rnd(2, 3, 2, 2)}, lambda t: t["x"].flatten(1, 3))
    case("permute", "permute", {"dims": [2, 0, 3, 1]}, {"x": rnd(2, 3, 4, 2)}, lambda t: t["x"].permute(2, 0, 3, 1))
    case("transpose", "transpose", {"a": 0, "b": 2}, {"x": rnd(2, 3, 4)}, lambda t: t["x"].transpose(0, 2))
    case("concat_axis1", "concat", {"axis": 1}, {"a": rnd(2, 3, 4), "b": rnd(2, 1, 4)}, lambda t: torch.cat([t["a"], t["b"]], 1))
    case("slice_axis2", "slice", {"axis": 2, "start": 1, "end": 4}, {"x": rnd(2, 3, 5)}, lambda t: t["x"][:, :, 1:4])
    for mode in ["zeros", "reflect", "replicate", "circular"]:
        m = MODE[mode]
        case("pad_2d_" + mode, "pad", {"pads": [[1, 2], [2, 1]], "mode": mode}, {"x": rnd(2, 2, 4, 5)},
             lambda t, m=m: F.pad(t["x"], (2, 1, 1, 2), mode=m))
        case("pad_1d_" + mode, "pad", {"pads": [[2, 1]], "mode": mode}, {"x": rnd(2, 3, 5)},
             lambda t, m=m: F.pad(t["x"], (2, 1), mode=m))


def add_activation_cases():
    torch.manual_seed(4)
    x = lambda: rnd(3, 4, 5) * 2.5
    case("relu", "relu", {}, {"x": x()}, lambda t: F.relu(t["x"]))
    case("leaky_relu", "leaky_relu", {"slope": 0.2}, {"x": x()}, lambda t: F.leaky_relu(t["x"], 0.2))
    case("elu", "elu", {"alpha": 1.3}, {"x": x()}, lambda t: F.elu(t["x"], 1.3))
    case("gelu", "gelu", {}, {"x": x()}, lambda t: F.gelu(t["x"]))
    case("sigmoid", "sigmoid", {}, {"x": x() * 3}, lambda t: torch.sigmoid(t["x"]))
    case("tanh", "tanh", {}, {"x": x()}, lambda t: torch.tanh(t["x"]))
    case("softmax_axis1", "softmax", {"axis": 1}, {"x": x()}, lambda t: F.softmax(t["x"], 1))
    case("softmax_last", "softmax", {"axis": -1}, {"x": x()}, lambda t: F.softmax(t["x"], -1))
    case("log_softmax_axis1", "log_softmax", {"axis": 1}, {"x": x() * 4}, lambda t: F.log_softmax(t["x"], 1))
    case("log_softmax_axis0", "log_softmax", {"axis": 0}, {"x": x()}, lambda t: F.log_softmax(t["x"], 0))
    case("exp", "exp", {}, {"x": x()}, lambda t: torch.exp(t["x"]))
    case("log", "log", {}, {"x": x().abs() + 0.1}, lambda t: torch.log(t["x"]))
    case("sqrt", "sqrt", {}, {"x": x().abs() + 0.1}, lambda t: torch.sqrt(t["x"]))
    case("neg", "neg", {}, {"x": x()}, lambda t: -t["x"])
    case("abs", "abs", {}, {"x": x()}, lambda t: t["x"].abs())
    case("add_scalar", "add_scalar", {"s": 1.5}, {"x": x()}, lambda t: t["x"] + 1.5)
    case("mul_scalar", "mul_scalar", {"s": -0.75}, {"x": x()}, lambda t: t["x"] * -0.75)
    case("broadcast_to", "broadcast_to", {"shape": [2, 3, 4]}, {"x": rnd(3, 1)}, lambda t: t["x"].expand(2, 3, 4))
    case("sum_to_shape", "sum_to_shape", {"shape": [3, 1]}, {"x": rnd(2, 3, 4)}, lambda t: t["x"].sum(dim=(0, 2)).reshape(3, 1))


def add_norm_cases():
    torch.manual_seed(5)
    for name, shape in [("1d_nc", (6, 3)), ("1d_ncl", (4, 3, 5)), ("2d", (3, 4, 3, 5))]:
        c = shape[1]
        x = rnd(*shape) * 2 + 1
        w, b = rnd(c), rnd(c)
        rm, rv = rnd(c) * 0.1, torch.rand(c) + 0.5

        def train(t, rm=rm, rv=rv):
            m, v = rm.clone().double(), rv.clone().double()
            y = F.batch_norm(t["x"], m, v, t["w"], t["b"], training=True, momentum=0.1, eps=1e-5)
            return y, {"running_mean_after": m, "running_var_after": v}

        case("batch_norm_train_" + name, "batch_norm", {"training": True, "momentum": 0.1, "eps": 1e-5},
             {"x": x, "w": w, "b": b}, train, grads=True)
        CASES[-1] = CASES[-1][:3] + ({"x": x, "w": w, "b": b, "running_mean": rm, "running_var": rv},) + CASES[-1][4:]
        case("batch_norm_eval_" + name, "batch_norm", {"training": False, "momentum": 0.1, "eps": 1e-5},
             {"x": x.clone(), "w": w.clone(), "b": b.clone(), "running_mean": rm.clone(), "running_var": rv.clone()},
             lambda t: F.batch_norm(t["x"], t["running_mean"], t["running_var"], t["w"], t["b"], training=False, eps=1e-5))
    case("layer_norm_last", "layer_norm", {"normalized_shape": [5], "eps": 1e-5},
         {"x": rnd(2, 3, 5) * 3, "w": rnd(5), "b": rnd(5)}, lambda t: F.layer_norm(t["x"], [5], t["w"], t["b"], 1e-5))
    case("layer_norm_chw", "layer_norm", {"normalized_shape": [3, 2, 4], "eps": 1e-5},
         {"x": rnd(2, 3, 2, 4), "w": rnd(3, 2, 4), "b": rnd(3, 2, 4)},
         lambda t: F.layer_norm(t["x"], [3, 2, 4], t["w"], t["b"], 1e-5))


def add_loss_cases():
    torch.manual_seed(6)
    tgt = torch.tensor([2, 0, 4, 1, 3, 2, 2])
    wts = torch.tensor([0.5, 2.0, 1.0, 0.3, 1.7])
    for name, cfg, kw in [
        ("plain", {}, {}),
        ("weights", {"class_weights": wts.tolist()}, {"weight": wts.double()}),
        ("smoothing", {"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
        ("weights_smoothing", {"class_weights": wts.tolist(), "label_smoothing": 0.2}, {"weight": wts.double(), "label_smoothing": 0.2}),
    ]:
        cfg = dict(cfg, targets=tgt.tolist())
        case("cross_entropy_" + name, "cross_entropy", cfg, {"x": rnd(7, 5) * 2}, lambda t, kw=kw: F.cross_entropy(t["x"], tgt, **kw))
    x, y = rnd(4, 3) * 3, torch.rand(4, 3)
    case("bce_with_logits", "bce_with_logits", {}, {"x": x, "t": y}, lambda t: F.binary_cross_entropy_with_logits(t["x"], t["t"]))
    case("bce_with_logits_pos_weight", "bce_with_logits", {"pos_weight": 2.5}, {"x": x.clone(), "t": y.clone()},
         lambda t: F.binary_cross_entropy_with_logits(t["x"], t["t"], pos_weight=torch.tensor(2.5, dtype=torch.float64)))
    a, b = rnd(3, 5) * 2, rnd(3, 5)
    case("mse", "mse", {}, {"x": a, "t": b}, lambda t: F.mse_loss(t["x"], t["t"]))
    case("mae", "mae", {}, {"x": a.clone(), "t": b.clone()}, lambda t: F.l1_loss(t["x"], t["t"]))
    case("huber", "huber", {"delta": 0.8}, {"x": a.clone(), "t": b.clone()}, lambda t: F.huber_loss(t["x"], t["t"], delta=0.8))


def add_optimizer_cases():
    """Three steps of each optimizer from p0 with fixed gradients; `out` holds the parameters
    after each step."""
    torch.manual_seed(7)
    p0 = rnd(10)
    grads = rnd(3, 10)
    for name, make, cfg in [
        ("sgd_momentum_wd", lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01),
         {"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
        ("sgd_nesterov", lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.8, nesterov=True),
         {"type": "sgd", "lr": 0.1, "momentum": 0.8, "nesterov": True}),
        ("adam_wd", lambda p: torch.optim.Adam([p], lr=0.1, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01),
         {"type": "adam", "lr": 0.1, "betas": [0.8, 0.99], "eps": 1e-8, "weight_decay": 0.01}),
        ("adamw", lambda p: torch.optim.AdamW([p], lr=0.1, weight_decay=0.1),
         {"type": "adamw", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}),
        ("rmsprop_momentum", lambda p: torch.optim.RMSprop([p], lr=0.01, alpha=0.9, momentum=0.5, weight_decay=0.02),
         {"type": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 1e-8, "momentum": 0.5, "weight_decay": 0.02}),
    ]:
        p = p0.clone().double().requires_grad_(True)
        opt = make(p)
        after = []
        for g in grads:
            p.grad = g.double().clone()
            opt.step()
            after.append(p.detach().clone())
        OPTIM.append((name, cfg, p0, grads, torch.stack(after)))


OPTIM = []


def add_schedule_cases():
    """OneCycleLR's learning rate and momentum (Adam's beta1, SGD's momentum) at every step of
    a run of `epochs` x `steps`."""
    for name, make, cfg in [
        ("one_cycle_adam", lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.01, epochs=5, steps_per_epoch=7),
         {"optimizer": "adam", "max_lr": 0.01, "epochs": 5, "steps": 7}),
        ("one_cycle_sgd_three_phase", lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.4, epochs=3, steps_per_epoch=11, pct_start=0.25, div_factor=10.0,
            final_div_factor=100.0, three_phase=True, base_momentum=0.8, max_momentum=0.9),
         {"optimizer": "sgd", "max_lr": 0.4, "epochs": 3, "steps": 11, "pct_start": 0.25,
          "div_factor": 10.0, "final_div_factor": 100.0, "three_phase": True,
          "base_momentum": 0.8, "max_momentum": 0.9}),
    ]:
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([p], lr=1.0) if cfg["optimizer"] == "adam" else torch.optim.SGD([p], lr=1.0, momentum=0.9)
        sched = make(opt)
        lrs, moms = [], []
        for _ in range(cfg["epochs"] * cfg["steps"]):
            g = opt.param_groups[0]
            lrs.append(g["lr"])
            moms.append(g["betas"][0] if "betas" in g else g["momentum"])
            opt.step()
            sched.step()
        SCHED.append((name, cfg, torch.tensor(lrs, dtype=torch.float64), torch.tensor(moms, dtype=torch.float64)))


SCHED = []


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(OUT, f))
    add_conv_cases()
    add_pool_cases()
    add_dense_cases()
    add_activation_cases()
    add_norm_cases()
    add_loss_cases()
    add_weight_norm_cases()
    add_upsample_cases()
    add_kernel_path_cases()
    add_optimizer_cases()
    add_schedule_cases()
    for name, cfg, lrs, moms in SCHED:
        save(os.path.join(OUT, "schedule_" + name + ".safetensors"), {"lr": lrs, "momentum": moms},
             {"op": "schedule", "cfg": json.dumps(cfg), "torch": torch.__version__})
    for name, cfg, p0, grads, after in OPTIM:
        save(os.path.join(OUT, "optim_" + name + ".safetensors"), {"in.p": p0, "in.grads": grads, "out": after},
             {"op": "optimizer", "cfg": json.dumps(cfg), "torch": torch.__version__})
    gen = torch.Generator().manual_seed(99)
    for name, op, cfg, inputs, fn, grads in CASES:
        leaves = {k: v.double().requires_grad_(k not in ("running_mean", "running_var")) for k, v in inputs.items()}
        res = fn(leaves)
        extra = {}
        if isinstance(res, tuple):
            res, extra = res
        gout = torch.randn(res.shape, generator=gen, dtype=torch.float64)
        (res * gout).sum().backward()
        tensors = {"in." + k: v for k, v in inputs.items()}
        tensors["out"] = res
        tensors["gout"] = gout
        for k, v in leaves.items():
            if v.grad is not None:
                tensors["grad." + k] = v.grad
        for k, v in extra.items():
            tensors["extra." + k] = v
        save(os.path.join(OUT, name + ".safetensors"), tensors, {"op": op, "cfg": json.dumps(cfg), "torch": torch.__version__})
    add_model_cases()
    write_models()
    print(f"wrote {len(CASES) + len(OPTIM) + len(SCHED)} cases and {len(MODELS)} models to {os.path.normpath(OUT)}", file=sys.stderr)


def add_weight_norm_cases():
    # torch._weight_norm(v, g, 0) is what nn.utils.weight_norm computes: g * v / ||v||, the norm
    # of each v[i] over its other axes.
    case("weight_norm_conv1d", "weight_norm", {},
         {"x": rnd(6, 4, 3), "g": rnd(6, 1, 1).abs() + 0.5}, lambda t: torch._weight_norm(t["x"], t["g"], 0))
    case("weight_norm_conv2d", "weight_norm", {},
         {"x": rnd(5, 2, 3, 3), "g": rnd(5, 1, 1, 1)}, lambda t: torch._weight_norm(t["x"], t["g"], 0))


def add_kernel_path_cases():
    """Shapes that take the convolution kernels' special paths (added last, with their own
    seed, so the earlier cases keep their numbers): 32 filters on short rows (the
    channel-vector kernel, forward and input gradient), a stride-1 depthwise convolution with
    a multiplier and dilation (the wide grid), and strided transposed convolutions with 8 or
    more outputs per group (run phase by phase)."""
    torch.manual_seed(8)
    for name, (n, cin, h, w_, cout, k), dilation, groups in [
        ("short_rows_32_filters", (2, 32, 7, 9, 32, 3), 1, 1),
        ("depthwise_mult2_dilation2", (2, 3, 11, 10, 6, 5), 2, 3),
    ]:
        x, w, b = rnd(n, cin, h, w_), rnd(cout, cin // groups, k, k), rnd(cout)
        pads = [list(same_pads(h, k, 1, dilation)), list(same_pads(w_, k, 1, dilation))]
        cfg = {"stride": [1, 1], "padding": "same", "dilation": [dilation, dilation], "groups": groups,
               "pad_mode": "zeros"}
        case(
            "conv2d_" + name,
            "conv2d",
            cfg,
            {"x": x, "w": w, "b": b},
            lambda t, p=pads, d=dilation, g=groups: conv2d_ref(t["x"], t["w"], t["b"], [1, 1], p, [d, d], g, "zeros"),
        )
    for name, (n, cin, h, w_, cout, kh, kw), stride, padding, outpad, groups in [
        ("stride2_pad1_16_outputs", (2, 8, 4, 5, 16, 4, 4), [2, 2], [1, 1], [0, 0], 1),
        ("stride3x2_groups2_outpad", (1, 4, 3, 4, 16, 3, 2), [3, 2], [1, 0], [2, 1], 2),
    ]:
        x, w, b = rnd(n, cin, h, w_), rnd(cin, cout // groups, kh, kw), rnd(cout)
        cfg = {"stride": stride, "padding": padding, "output_padding": outpad, "dilation": [1, 1], "groups": groups}
        case(
            "conv_transpose2d_" + name,
            "conv_transpose2d",
            cfg,
            {"x": x, "w": w, "b": b},
            lambda t, s=stride, p=padding, o=outpad, g=groups: F.conv_transpose2d(
                t["x"], t["w"], t["b"], stride=s, padding=p, output_padding=o, groups=g
            ),
        )


def add_upsample_cases():
    # F.interpolate with integer scale factors; align_corners=False (PyTorch's default)
    for mode, op in [("nearest", "upsample_nearest2d"), ("bilinear", "upsample_bilinear2d")]:
        for sf in [(2, 2), (3, 2), (1, 4)]:
            extra = {} if mode == "nearest" else {"align_corners": False}
            case(f"{op}_{sf[0]}x{sf[1]}", op, {"scale": list(sf)}, {"x": rnd(2, 3, 4, 5)},
                 lambda t, sf=sf, mode=mode, extra=extra: F.interpolate(t["x"], scale_factor=sf, mode=mode, **extra))
    for mode, op in [("nearest", "upsample_nearest1d"), ("linear", "upsample_linear1d")]:
        for sf in [2, 3]:
            extra = {} if mode == "nearest" else {"align_corners": False}
            case(f"{op}_{sf}", op, {"scale": sf}, {"x": rnd(2, 3, 6)},
                 lambda t, sf=sf, mode=mode, extra=extra: F.interpolate(t["x"], scale_factor=sf, mode=mode, **extra))


# Whole models (tests/golden/models/): a spec, its parameters under convnet's (PyTorch-style)
# names, and PyTorch's output and gradients computed by a functional re-statement of the
# blocks' semantics. The Rust test builds the model from the spec, loads the parameters and
# compares.
MODELS = []


def causal_conv(x, w, b, d):
    return F.conv1d(F.pad(x, (d * (w.shape[-1] - 1), 0)), w, b, dilation=d)


def same_conv1d(x, w, b):
    k = w.shape[-1]
    return F.conv1d(F.pad(x, ((k - 1) // 2, k - 1 - (k - 1) // 2)), w, b)


def add_model_cases():
    # a TCN with weight norm and skip connections, then a dense head
    c_in, nf, k, dil, L = 2, 5, 2, [1, 2, 4], 20
    P = {}
    for i, d in enumerate(dil):
        pre = f"layers.0.blocks.{i}."
        for j, cin in [(1, c_in if i == 0 else nf), (2, nf)]:
            v = rnd(nf, cin, k) * 0.5
            P[pre + f"conv{j}.weight_v"] = v
            P[pre + f"conv{j}.weight_g"] = rnd(nf, 1, 1).abs() + 0.5
            P[pre + f"conv{j}.bias"] = rnd(nf) * 0.1
        if i == 0:
            P[pre + "shortcut.weight"] = rnd(nf, c_in, 1) * 0.5
            P[pre + "shortcut.bias"] = rnd(nf) * 0.1
    P["layers.1.weight"] = rnd(3, nf) * 0.5
    P["layers.1.bias"] = rnd(3) * 0.1

    def tcn(t, dil=dil):
        h, skips = t["x"], None
        for i, d in enumerate(dil):
            pre = f"layers.0.blocks.{i}."
            w = lambda n: torch._weight_norm(t[pre + n + ".weight_v"], t[pre + n + ".weight_g"], 0)
            y = F.relu(causal_conv(h, w("conv1"), t[pre + "conv1.bias"], d))
            y = F.relu(causal_conv(y, w("conv2"), t[pre + "conv2.bias"], d))
            s = F.conv1d(h, t[pre + "shortcut.weight"], t[pre + "shortcut.bias"]) if pre + "shortcut.weight" in t else h
            h = F.relu(y + s)
            skips = y if skips is None else skips + y
        return F.linear(skips[:, :, -1], t["layers.1.weight"], t["layers.1.bias"])

    spec = f"""[model]
input = [{c_in}, {L}]
[[model.layers]]
type = "tcn"
nb_filters = {nf}
kernel_size = {k}
dilations = {dil}
normalization = "weight"
[[model.layers]]
type = "dense"
units = 3
"""
    MODELS.append(("tcn_weight_norm", spec, dict(P, x=rnd(3, c_in, L)), tcn))

    # a WaveNet returning every step
    R, S, O, k, dil, L = 4, 3, 2, 2, [1, 2, 4, 1, 2, 4], 16
    P = {"layers.0.input.weight": rnd(R, 1, k) * 0.5, "layers.0.input.bias": rnd(R) * 0.1}
    for i, d in enumerate(dil):
        pre = f"layers.0.layers.{i}."
        P[pre + "gated.weight"] = rnd(2 * R, R, k) * 0.5
        P[pre + "gated.bias"] = rnd(2 * R) * 0.1
        if i + 1 < len(dil):
            P[pre + "residual.weight"] = rnd(R, R, 1) * 0.5
            P[pre + "residual.bias"] = rnd(R) * 0.1
        P[pre + "skip.weight"] = rnd(S, R, 1) * 0.5
        P[pre + "skip.bias"] = rnd(S) * 0.1
    P["layers.0.head.weight"] = rnd(S, S, 1) * 0.5
    P["layers.0.head.bias"] = rnd(S) * 0.1
    P["layers.0.output.weight"] = rnd(O, S, 1) * 0.5
    P["layers.0.output.bias"] = rnd(O) * 0.1

    def wavenet(t, dil=dil, R=R):
        h = causal_conv(t["x"], t["layers.0.input.weight"], t["layers.0.input.bias"], 1)
        skips = None
        for i, d in enumerate(dil):
            pre = f"layers.0.layers.{i}."
            g = causal_conv(h, t[pre + "gated.weight"], t[pre + "gated.bias"], d)
            z = torch.tanh(g[:, :R]) * torch.sigmoid(g[:, R:])
            s = F.conv1d(z, t[pre + "skip.weight"], t[pre + "skip.bias"])
            if pre + "residual.weight" in t:
                h = h + F.conv1d(z, t[pre + "residual.weight"], t[pre + "residual.bias"])
            skips = s if skips is None else skips + s
        y = F.relu(F.conv1d(F.relu(skips), t["layers.0.head.weight"], t["layers.0.head.bias"]))
        return F.conv1d(y, t["layers.0.output.weight"], t["layers.0.output.bias"])

    spec = f"""[model]
input = [1, {L}]
[[model.layers]]
type = "wavenet"
residual_channels = {R}
skip_channels = {S}
output_channels = {O}
kernel_size = {k}
dilations = [1, 2, 4]
nb_stacks = 2
return_sequences = true
"""
    MODELS.append(("wavenet", spec, dict(P, x=rnd(2, 1, L)), wavenet))

    # a ResNet-style residual block (eval-mode batch norm, a 1x1 shortcut), global pooling
    P = {
        "layers.0.body.0.weight": rnd(4, 2, 8) * 0.3, "layers.0.body.0.bias": rnd(4) * 0.1,
        "layers.0.body.1.weight": rnd(4).abs() + 0.5, "layers.0.body.1.bias": rnd(4) * 0.1,
        "layers.0.body.1.running_mean": rnd(4) * 0.1, "layers.0.body.1.running_var": rnd(4).abs() + 0.5,
        "layers.0.body.3.weight": rnd(4, 4, 5) * 0.3, "layers.0.body.3.bias": rnd(4) * 0.1,
        "layers.0.shortcut.weight": rnd(4, 2, 1) * 0.5, "layers.0.shortcut.bias": rnd(4) * 0.1,
    }

    def resnet(t):
        x = t["x"]
        h = same_conv1d(x, t["layers.0.body.0.weight"], t["layers.0.body.0.bias"])
        h = F.batch_norm(h, t["layers.0.body.1.running_mean"], t["layers.0.body.1.running_var"],
                         t["layers.0.body.1.weight"], t["layers.0.body.1.bias"], False, 0.1, 1e-5)
        h = F.relu(h)
        h = same_conv1d(h, t["layers.0.body.3.weight"], t["layers.0.body.3.bias"])
        s = F.conv1d(x, t["layers.0.shortcut.weight"], t["layers.0.shortcut.bias"])
        return F.relu(h + s).mean(dim=2)

    spec = """[model]
input = [2, 15]
[[model.layers]]
type = "residual"
activation = "relu"
[[model.layers.layers]]
type = "conv1d"
filters = 4
kernel_size = 8
padding = "same"
[[model.layers.layers]]
type = "batch_norm"
[[model.layers.layers]]
type = "activation"
activation = "relu"
[[model.layers.layers]]
type = "conv1d"
filters = 4
kernel_size = 5
padding = "same"
[[model.layers]]
type = "global_avg_pool"
"""
    MODELS.append(("residual_block", spec, dict(P, x=rnd(3, 2, 15)), resnet))


def write_models():
    out = os.path.join(OUT, "models")
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    for name, spec, inputs, fn in MODELS:
        leaves = {k: v.double().requires_grad_("running" not in k) for k, v in inputs.items()}
        res = fn(leaves)
        gout = torch.randn(res.shape, generator=gen, dtype=torch.float64)
        (res * gout).sum().backward()
        tensors = {"in." + k: v for k, v in inputs.items()}
        tensors["out"] = res
        tensors["gout"] = gout
        for k, v in leaves.items():
            if v.grad is not None:
                tensors["grad." + k] = v.grad
        save(os.path.join(out, name + ".safetensors"), tensors, {"spec": spec, "torch": torch.__version__})


if __name__ == "__main__":
    main()
