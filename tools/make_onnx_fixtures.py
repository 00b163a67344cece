#!/usr/bin/env python3
"""Writes the ONNX import fixtures under tests/onnx/: PyTorch models exported with
torch.onnx.export (eval mode, opset 13, a dynamic batch axis), each `<name>.onnx` with
`<name>.io.safetensors` holding its outputs on fixed inputs (`input0`, `output0`), computed
by PyTorch in float64 and stored as float32:

- lenet: conv-relu-maxpool twice, flatten, three linear layers (ReLU between);
- vgg_bn: conv-batchnorm-relu blocks (the exporter folds each batch norm into its
  convolution), max pooling, flatten, linear-batchnorm1d-relu (kept as BatchNormalization),
  dropout, linear, softmax;
- resnet: a stem, a residual block with an identity shortcut and one with a strided 1x1
  convolution shortcut (with batch norm), global average pooling, linear;
- causal_1d: causal dilated convolutions (ConstantPad1d before each), LeakyReLU, a residual
  addition, global average pooling, linear.

Run: python3 tools/make_onnx_fixtures.py   (Debian's python3-torch)
Made with PyTorch 1.13 (Debian 1.13.1+dfsg-4).
"""
import os

import torch
import torch.nn as nn

from safetensors_file import save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "onnx")


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x):
        s = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.body(x) + s)


class Causal(nn.Module):
    def __init__(self, c_in, c_out, k, d):
        super().__init__()
        self.pad = nn.ConstantPad1d(((k - 1) * d, 0), 0.0)
        self.conv = nn.Conv1d(c_in, c_out, k, dilation=d)

    def forward(self, x):
        return self.conv(self.pad(x))


class CausalNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Causal(2, 8, 3, 1)
        self.act = nn.LeakyReLU(0.1)
        self.b = Causal(8, 8, 3, 2)
        self.c = Causal(8, 8, 3, 4)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.act(self.a(x))
        h = self.act(self.c(self.act(self.b(h))) + h)
        return self.head(h.mean(2))


def models():
    lenet = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    vgg = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(32, 10), nn.Softmax(dim=1))
    resnet = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        Block(8, 8, 1), Block(8, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 5))
    return [
        ("lenet", lenet, (1, 28, 28)),
        ("vgg_bn", vgg, (3, 16, 16)),
        ("resnet", resnet, (3, 16, 16)),
        ("causal_1d", CausalNet(), (2, 40)),
    ]


def randomize(model, gen):
    """Weights of few significant bits and batch-norm statistics off 0 and 1."""
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.dtype != torch.float32:
                continue
            k = torch.randint(-15, 16, p.shape, generator=gen).float() / 15
            if name.endswith("running_var"):
                p.copy_(0.5 + (k + 1) / 2)
            elif name.endswith("running_mean"):
                p.copy_(0.25 * k)
            elif p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.25 * k)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(k / fan_in ** 0.5)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, model, shape in models():
        gen = torch.Generator().manual_seed(sum(map(ord, name)))
        randomize(model, gen)
        model.eval()
        x = torch.randint(-64, 65, (2,) + shape, generator=gen).float() / 32
        path = os.path.join(OUT, f"{name}.onnx")
        torch.onnx.export(model, x, path, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          opset_version=13)
        with torch.no_grad():
            y = model.double()(x.double()).float()
        save(os.path.join(OUT, f"{name}.io.safetensors"), {"input0": x, "output0": y})
        print(f"{name}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
