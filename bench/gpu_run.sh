#!/usr/bin/env bash
# The GPU benchmark run, prepared as one script for a machine with a CUDA GPU (under 10 minutes on an H100/H200):
# Phi-3-mini-4k-size LoRA and full fine-tuning (and QLoRA where bitsandbytes is installed), each beside plain TRL and
# TRL tuned, written as JSON.
#
#   bench/gpu_run.sh [OUT_DIR]          # default OUT_DIR: $OUT, else bench/results
#
# Environment:
#   WHEELS=DIR     install what the device image lacks (chattune's own dependencies: trl, datasets, mlflow, ...)
#                  from the wheels in DIR, offline (`pip download -d DIR trl datasets mlflow ...` beforehand); without
#                  it, a missing package is installed from the package index.
#   PYTHON=python3 the interpreter (default: .venv/bin/python when there is one, else python3).
#   REPEATS=3      runs of each contender, interleaved.
#   DRY_RUN=1      the same script on a CPU with a shrunk Phi-3 (1 layer, hidden 192, LoRA only): what the test suite runs
#                  (tests/integration/test_benches.py), so that the script cannot rot. Not a measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results}}
mkdir -p "$out"
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
repeats=${REPEATS:-3}

# 1. what the image lacks: chattune (editable) and whichever of its dependencies are not there (the image's torch
#    satisfies chattune's torch requirement and is kept); looked up, not imported: an import costs seconds of CPU
#    that the run pays again in each of its processes
if ! "$py" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('chattune', 'trl', 'datasets', 'mlflow')))" 2>/dev/null; then
  echo "installing chattune and what it needs${WHEELS:+ from $WHEELS}" >&2
  "$py" -m pip install --quiet ${WHEELS:+--no-index --find-links "$WHEELS"} -e .
fi

# 2. the contenders; on the GPU, TRL tuned is padding-free batches without checkpointing (the best on the CPU too)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "${DRY_RUN:-0}" = 1 ]; then
  args=(--device cpu --arch phi3-mini-4k --layers 1 --hidden 192 --rows 24 --modes lora --repeats 1
        --tuned padding_free_no_checkpointing)
  name="train_throughput-gpu-dryrun-$commit.json"
else
  modes=lora,full
  if "$py" -c "import bitsandbytes" 2>/dev/null; then modes=lora,full,qlora; fi
  args=(--device cuda --quick --modes "$modes" --repeats "$repeats" --tuned padding_free_no_checkpointing)
  name="train_throughput-gpu-$commit.json"
fi
"$py" bench/train_throughput.py "${args[@]}" --json > "$out/$name"
echo "$out/$name"
