#!/usr/bin/env python3
"""Checks ONNX files convnet wrote against ONNX Runtime: for every `NAME.onnx` in the folder
given, `onnx.checker` (full check, with shape inference) must accept it, and ONNX Runtime's
outputs on `NAME.in0.npy`, `NAME.in1.npy`, ... must equal convnet's (`NAME.out0.npy`, ...)
within 1e-5 relative (the largest difference over the largest value). Prints one line per
input; exits 1 if any check fails.

Run by tests/onnx_export.rs with the virtual environment .ci/run makes (target/onnx-venv:
PyPI's onnx and onnxruntime). Usage: python check_onnx.py FOLDER
"""
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(folder):
    failed = 0
    for path in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
        name = os.path.basename(path)[:-5]
        try:
            onnx.checker.check_model(path, full_check=True)
        except Exception as e:  # the checker's own exception types vary by version
            print(f"{name}: onnx.checker refuses it: {e}")
            failed += 1
            continue
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        i = 0
        while os.path.exists(os.path.join(folder, f"{name}.in{i}.npy")):
            x = np.load(os.path.join(folder, f"{name}.in{i}.npy"))
            want = np.load(os.path.join(folder, f"{name}.out{i}.npy"))
            (got,) = session.run(["output"], {"input": x})
            if got.shape != want.shape:
                print(f"{name} input {list(x.shape)}: shape {list(got.shape)}, convnet's {list(want.shape)}")
                failed += 1
            else:
                scale = max(float(np.abs(want).max()), 1e-12)
                err = float(np.abs(got.astype(np.float64) - want).max()) / scale
                ok = err <= 1e-5
                failed += not ok
                print(f"{name} input {list(x.shape)}: relative error {err:.1e}"
                      + ("" if ok else "  FAILED"))
            i += 1
        if i == 0:
            print(f"{name}: no inputs")
            failed += 1
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}: "
          + ("all agree" if not failed else f"{failed} failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
