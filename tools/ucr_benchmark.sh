#!/usr/bin/env bash
# Train the FCN and ResNet examples on every UCR/UEA set in a folder and write a table of test
# accuracy (mean and standard deviation over seeds) beside the published FCN/ResNet means,
# one nearest neighbour with the Euclidean distance (computed by `convnet baseline`) and the
# wall time.
#
#   tools/ucr_benchmark.sh FOLDER [--models fcn,resnet] [--seeds 5] [--epochs N]
#                          [--max-seconds S] [--normalize per_series|standardize|none]
#                          [--out DIR]
#
# FOLDER holds NAME_TRAIN.ts and NAME_TEST.ts (or .tsv) pairs. Each set gets the examples'
# spec (examples/gunpoint_fcn.toml, examples/gunpoint_resnet.toml) with its channels, classes
# and files put in, the input length open ("any": series of unequal length train in padded,
# masked batches) and every series z-normalised on its own (--normalize standardize: per
# channel over the training set instead, for sets whose levels matter). --epochs and
# --max-seconds replace the examples' budget. Runs, specs and the tables (results.md, results.csv) go
# to DIR (default runs/ucr_benchmark). The published means are those of Fawaz et al. (2019),
# "Deep learning for time series classification: a review" (tools/ucr_published.csv).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
folder="" models="fcn,resnet" seeds=5 epochs="" max_seconds="" normalize="per_series"
out="runs/ucr_benchmark"
while [ $# -gt 0 ]; do
    case "$1" in
        --models) models="$2"; shift 2 ;;
        --seeds) seeds="$2"; shift 2 ;;
        --epochs) epochs="$2"; shift 2 ;;
        --max-seconds) max_seconds="$2"; shift 2 ;;
        --normalize) normalize="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) folder="$1"; shift ;;
    esac
done
[ -n "$folder" ] && [ -d "$folder" ] || { echo "usage: $0 FOLDER [options] (see --help)" >&2; exit 2; }
convnet="${CONVNET:-$here/target/release/convnet}"
[ -x "$convnet" ] || (cd "$here" && cargo build --release --quiet)
mkdir -p "$out/runs"
folder="$(cd "$folder" && pwd)"

# channels, classes: from a .ts header, or a .tsv file's first column
describe() {
    case "$1" in
        *.ts) awk '{k1 = tolower($1)}
                k1 == "@dimensions" {d = $2}
                k1 == "@univariate" {u = tolower($2)}
                k1 == "@classlabel" {k = NF - 2}
                k1 == "@data" {exit}
                END {print (u == "true" ? 1 : (d ? d : 0)), k}' "$1" ;;
        *.tsv) awk -F'\t' '{seen[$1]=1} END {print 1, length(seen)}' "$1" ;;
    esac
}

# the example spec for a set: its channels, classes and files; the input length open
spec_for() { # model set train test format channels classes
    local t="$here/examples/gunpoint_$1.toml"
    sed -E \
        -e "s|^input = .*|input = [$6, \"any\"]|" \
        -e "s|^units = [0-9]+|units = $7|" \
        -e "s|^format = .*|format = \"$5\"|" \
        -e "s|^train = .*|train = \"$3\"|" \
        -e "s|^test = .*|test = \"$4\"|" \
        -e "s|^normalize = .*|normalize = \"$normalize\"|" \
        ${epochs:+-e "s|^epochs = .*|epochs = $epochs|"} \
        ${max_seconds:+-e "s|^max_seconds = .*|max_seconds = $max_seconds|"} \
        "$t"
}

published() { # set model -> the published mean, or -
    awk -F, -v s="$1" -v m="$2" 'NR>1 && $1==s {print (m=="fcn" ? $2 : $3); f=1} END {if (!f) print "-"}' \
        "$here/tools/ucr_published.csv"
}

csv="$out/results.csv"
echo "set,model,seeds,mean,std,published,nn_ed,seconds" > "$csv"
for train in "$folder"/*_TRAIN.ts "$folder"/*_TRAIN.tsv; do
    [ -f "$train" ] || continue
    ext="${train##*.}"
    name="$(basename "$train" "_TRAIN.$ext")"
    test="$folder/${name}_TEST.$ext"
    [ -f "$test" ] || { echo "$name: no ${name}_TEST.$ext, skipped" >&2; continue; }
    read -r channels classes < <(describe "$train")
    if [ -z "$classes" ] || [ "$channels" = 0 ]; then
        echo "$name: channels or classes not found in the header, skipped" >&2
        continue
    fi
    nn=""
    for model in ${models//,/ }; do
        spec="$out/${name}_$model.toml"
        spec_for "$model" "$name" "$train" "$test" "$ext" "$channels" "$classes" > "$spec"
        if [ -z "$nn" ]; then
            nn="$("$convnet" baseline "$spec" --json | awk -F': ' '/"accuracy"/ {gsub(/,/, "", $2); printf "%.2f", 100 * $2}')"
        fi
        accs="" secs=""
        for seed in $(seq 1 "$seeds"); do
            run="$out/runs/${name}_${model}_seed$seed"
            start=$(date +%s.%N)
            "$convnet" train "$spec" --seed "$seed" --out "$run" --overwrite > "$run.log" 2>&1 \
                || { echo "$name $model seed $seed failed: see $run.log" >&2; continue; }
            end=$(date +%s.%N)
            acc="$("$convnet" eval "$run" --json | awk -F': ' '/"accuracy"/ {gsub(/,/, "", $2); printf "%.4f", 100 * $2; exit}')"
            accs="$accs $acc"
            secs="$secs $(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')"
            echo "$name $model seed $seed: $acc%" >&2
        done
        [ -n "$accs" ] || continue
        stats="$(echo "$accs" | tr ' ' '\n' | awk 'NF {n++; s+=$1; q+=$1*$1}
            END {m=s/n; v=(n>1 ? (q-n*m*m)/(n-1) : 0); if (v<0) v=0; printf "%d,%.2f,%.2f", n, m, sqrt(v)}')"
        wall="$(echo "$secs" | tr ' ' '\n' | awk 'NF {n++; s+=$1} END {printf "%.0f", s/n}')"
        echo "$name,$model,$stats,$(published "$name" "$model"),$nn,$wall" >> "$csv"
    done
done

{
    echo "| set | model | seeds | test accuracy % (mean ± std) | published mean % | 1-NN ED % | seconds per run |"
    echo "|---|---|---|---|---|---|---|"
    awk -F, 'NR>1 {m = ($2 == "fcn" ? "FCN" : ($2 == "resnet" ? "ResNet" : $2))
        printf "| %s | %s | %s | %s ± %s | %s | %s | %s |\n", $1, m, $3, $4, $5, $6, $7, $8}' "$csv"
} > "$out/results.md"
cat "$out/results.md"
