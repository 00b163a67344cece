#!/usr/bin/env bash
# Sets up the peers of the side-by-side benchmark and runs it:
#   - PyTorch 1.13 from Debian (python3-torch) with the pthread OpenBLAS (libopenblas0-pthread),
#   - ONNX Runtime from PyPI, in a virtual environment under target/ that sees Debian's torch,
# then runs tools/bench_peers.py with the same malloc settings for every peer.
# Usage: tools/bench_peers.sh [--rounds 5] [--filter NAME] [--markdown]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  sudo_if() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_if apt-get update -qq
  sudo_if env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch libopenblas0-pthread python3-venv
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q onnxruntime
fi
cargo build --release -q
# glibc's malloc can unmap and remap large buffers between calls; the same settings for all.
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824
# OpenBLAS core-type overrides slow a current BLAS; the benchmark lets it detect the CPU.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
exec "$venv/bin/python" tools/bench_peers.py "$@"
