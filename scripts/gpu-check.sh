#!/usr/bin/env bash
# GPU check of leakscope's CUDA accounting (docs/gpu.md, JSON format_version 2).
#
# Runs small target programs (PyTorch caching / expandable / cudaMallocAsync allocators,
# pinned memory, CUDA graphs, a C pluggable allocator in a MemPool, CuPy, NCCL, and a CUDA C
# program with planted leaks) bare and under `leakscope run --format json`, and compares
# leakscope's figures with each library's own (memory_reserved(), the pool attributes,
# host_memory_stats(), CuPy's pool, the C allocator's counters, compute-sanitizer's leak
# report, NVML). One markdown row per check; exits non-zero if any check fails.
#
# usage: scripts/gpu-check.sh [OUTDIR] [driver options]
#   OUTDIR              default ./gpu-check-out; receives 4 files:
#                         gpu-check.md (the table), results.json, logs.txt,
#                         gpu-check-artifacts.tar.gz (reports + logs, for
#                         `python3 scripts/gpu_check/compare.py --evaluate artifacts`)
#   LEAKSCOPE_BIN       the leakscope binary, libleakscope_shim.so next to it
#                       (default .gpu/leakscope; --leakscope PATH overrides)
#   PYTHON              the Python with torch and CuPy (default python3)
#   GPUCHECK_JOBS       scenarios at once (default 3)
#   GPUCHECK_DEADLINE_S time budget of the whole check (default 400)
#   driver options      --only caching,nccl   --bare-only   --jobs N   --deadline-s S
#                       (python3 scripts/gpu_check/driver.py --help)
#
# Example on the GPU machine, everything landing in $OUT:
#   LEAKSCOPE_BIN=.gpu/leakscope bash scripts/gpu-check.sh "$OUT"
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-gpu-check-out}"
if [ "$#" -gt 0 ]; then shift; fi
py="${PYTHON:-python3}"
bin="${LEAKSCOPE_BIN:-.gpu/leakscope}"

mkdir -p "$out" || { echo "gpu-check: cannot create $out" >&2; exit 2; }
for tool in "$py" timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "gpu-check: $tool not found" >&2; exit 2; }
done

# The comparison logic first: if it is broken, no GPU time is worth spending.
"$py" "$here/gpu_check/compare.py" --self-test || { echo "gpu-check: compare.py self-test failed" >&2; exit 2; }

exec "$py" "$here/gpu_check/driver.py" --out "$out" --leakscope "$bin" --python "$(command -v "$py")" "$@"
