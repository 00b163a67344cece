#!/usr/bin/env bash
# Data-parallel training on one machine: samples/s of one epoch of the F network on the full
# Fashion-MNIST training set (tools/dist/f_train.toml, batch 128, no validation part) as
# 1 process x 2 threads, 2 processes x 1 thread (the all-reduce's cost) and 1 process x
# 1 thread, median of --rounds runs; then the all-reduce by buffer size on 2 and 4 ranks
# (examples/allreduce.rs). Needs Open MPI and the dataset-fashion-mnist files.
#   tools/dist/scaling.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=3
[ "${1:-}" = "--rounds" ] && rounds=$2
cargo build --release --features mpi --target-dir target/mpi --bin convnet --example allreduce -q
bin=target/mpi/release/convnet
spec=tools/dist/f_train.toml
out=$(mktemp -d)
mpi=(mpirun --allow-run-as-root --oversubscribe)
secs() { tail -1 "$1/metrics.csv" | cut -d, -f6; }
lscpu | grep -E "Model name|^CPU\(s\)|L2 cache|L3 cache"
echo "| setup | epoch seconds (median of $rounds) | samples/s | all-reduce (rank 0) |"
echo "| --- | ---: | ---: | --- |"
for setup in "1x2" "2x1" "1x1"; do
    runs=()
    note=""
    for r in $(seq "$rounds"); do
        rm -rf "$out/run"
        case $setup in
            1x2) $bin train $spec --out "$out/run" --threads 2 >/dev/null 2>&1 ;;
            2x1) note=$("${mpi[@]}" -np 2 $bin train $spec --out "$out/run" --threads 1 2>&1 |
                        grep -o "the training thread waited [0-9.]* ms a step" || true) ;;
            1x1) $bin train $spec --out "$out/run" --threads 1 >/dev/null 2>&1 ;;
        esac
        runs+=("$(secs "$out/run")")
    done
    med=$(printf "%s\n" "${runs[@]}" | sort -g | sed -n "$(( (rounds + 1) / 2 ))p")
    sps=$(python3 -c "print(round(60000 / $med))")
    echo "| $setup (processes x threads) | $med | $sps | ${note:--} |"
done
for n in 2 4; do
    "${mpi[@]}" -np $n target/mpi/release/examples/allreduce
done
rm -rf "$out"
