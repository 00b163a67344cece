#!/usr/bin/env python3
"""Writes tests/fixtures/arrays.npz (np.savez: stored members) and arrays_compressed.npz
(np.savez_compressed: deflated members), the archives NumPy itself writes, so that the tests
read real `.npz` files without Python.

Each holds x_train uint8 (6, 4, 4) with value (i * 37) % 256 at flat index i, y_train int64
[0, 1, 0, 1, 2, 2], x_test float32 (3, 1, 4, 4) with value i / 10, y_test int32 [2, 0, 1], and
wide float64 (2, 3) with value i - 2.5.

Run: python3 tools/make_npz_fixtures.py   (NumPy only; Debian's python3-numpy)
Made with NumPy 1.24.2.
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

arrays = {
    "x_train": (np.arange(6 * 4 * 4) * 37 % 256).astype(np.uint8).reshape(6, 4, 4),
    "y_train": np.array([0, 1, 0, 1, 2, 2], dtype=np.int64),
    "x_test": (np.arange(3 * 16) / 10).astype(np.float32).reshape(3, 1, 4, 4),
    "y_test": np.array([2, 0, 1], dtype=np.int32),
    "wide": (np.arange(6) - 2.5).astype(np.float64).reshape(2, 3),
}
os.makedirs(OUT, exist_ok=True)
np.savez(os.path.join(OUT, "arrays.npz"), **arrays)
np.savez_compressed(os.path.join(OUT, "arrays_compressed.npz"), **arrays)
