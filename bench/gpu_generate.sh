#!/usr/bin/env bash
# Generation throughput bare vs under leakscope on the GPU machine (bench/gpu_generate.py).
#
# usage: bench/gpu_generate.sh [OUTDIR] [gpu_generate.py options, e.g. --rounds 3 --shim-formats both]
#   the cost of PyTorch block tracking: --shim-formats blocks (bare, --track gpu, --track gpu
#   --no-torch-blocks) or blocks-all (bare, default tracking, --no-torch-blocks)
#   LEAKSCOPE_BIN  the leakscope binary (default .gpu/leakscope), its shim next to it
#   PYTHON         the Python with torch and transformers (default python3)
# Writes OUTDIR/gpu_generate.md (the tables) and OUTDIR/gpu_generate.log (progress, problems).
set -u -o pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-gpu-generate-out}"
if [ "$#" -gt 0 ]; then shift; fi
mkdir -p "$out"
"${PYTHON:-python3}" "$here/gpu_generate.py" --compare --leakscope "${LEAKSCOPE_BIN:-.gpu/leakscope}" \
    --out "$out/gpu_generate.md" "$@" 2> >(tee "$out/gpu_generate.log" >&2)
