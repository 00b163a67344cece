#!/usr/bin/env python3
"""Writes data/fashion-mnist/: a class-balanced 12000-image subset of the Fashion-MNIST
training set (the first 1200 images of each class, in file order) and the full 10000-image
test set, as gzip IDX files, from Debian's `dataset-fashion-mnist` package
(/usr/share/datasets/fashion-mnist/). Standard library only.

Run: python3 tools/make_fashion_subset.py
"""
import gzip
import os
import shutil
import struct

SRC = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "fashion-mnist")
PER_CLASS = 1200


def read(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    rank = magic & 0xFF
    dims = struct.unpack(">" + "I" * rank, data[4 : 4 + 4 * rank])
    return dims, data[4 + 4 * rank :]


def write(path, magic, dims, payload):
    # mtime=0 so the file is the same bytes on every run
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
        f.write(struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims) + payload)


def main():
    os.makedirs(OUT, exist_ok=True)
    (n, h, w), images = read(os.path.join(SRC, "train-images-idx3-ubyte.gz"))
    (_,), labels = read(os.path.join(SRC, "train-labels-idx1-ubyte.gz"))
    taken, keep = [0] * 10, []
    for i in range(n):
        c = labels[i]
        if taken[c] < PER_CLASS:
            taken[c] += 1
            keep.append(i)
    size = h * w
    write(os.path.join(OUT, "train-images-idx3-ubyte.gz"), 0x803, (len(keep), h, w), b"".join(images[i * size : (i + 1) * size] for i in keep))
    write(os.path.join(OUT, "train-labels-idx1-ubyte.gz"), 0x801, (len(keep),), bytes(labels[i] for i in keep))
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        shutil.copyfile(os.path.join(SRC, name), os.path.join(OUT, name))
    print(f"kept {len(keep)} training images ({PER_CLASS} per class) and the 10000 test images in {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
