#!/usr/bin/env python3
"""Generation throughput of a small random-weight Llama on the GPU, bare and under leakscope.

Two modes:

  python3 bench/gpu_generate.py [--batch 8 --prompt 64 --new 128 --timed 5]
      One measurement in this process: builds a LlamaForCausalLM from a config (random
      weights, nothing downloaded; 1024 hidden, 8 layers, bf16), runs one warm-up generate
      and then --timed greedy generate calls of --new tokens each for a batch of --batch
      prompts of --prompt tokens, and prints tokens/s (generated tokens / time of the timed
      calls) and a last line `GENBENCH {json}`.

  python3 bench/gpu_generate.py --compare --leakscope PATH [--rounds 3] [--shim-formats alternate]
      The overhead comparison: one process per figure, interleaved (bare, leakscope, bare,
      leakscope, ...). Each leakscope run records into a scratch folder and its report
      (text, leakscope's default, or --format json) is discarded. --shim-formats:
        alternate  the leakscope runs take text, json, text, ... in turn (default: 2 processes
                   a round, so 3 rounds stay well under 5 minutes on an H100)
        both       every round runs bare, leakscope (text), leakscope (json)
        text|json  every leakscope run uses that format
        gpu        every leakscope run records CUDA memory only (`run --track gpu`)
        text-gpu   every round runs bare, leakscope (text), leakscope --track gpu
        blocks     the cost of PyTorch block tracking: every round runs bare, leakscope
                   --track gpu (blocks on, the default) and leakscope --track gpu
                   --no-torch-blocks; the summary estimates the cost per block event from
                   the caching allocator's own allocation count (GENBENCH block_allocs)
        blocks-all the same with host tracking on: bare, leakscope (text), leakscope
                   --no-torch-blocks
      Prints markdown tables: tokens/s per round, medians, the ratio leakscope/bare, and wall
      seconds per process (which include leakscope's end-of-run report). --budget-s stops
      starting rounds when the next one would not fit.

The anchors (../shared/anchors.md) measured ~600-640 tokens/s bare for this model on the H100;
this loop is bound by kernel launches on the CPU, so run-to-run noise is about 10%.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


# ----------------------------------------------------------------------------------------
# one measurement

def measure(args):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=16,
        # No end-of-sequence token: every call generates exactly --new tokens.
        max_position_embeddings=1024, bos_token_id=1, eos_token_id=None, pad_token_id=0,
    )
    model = transformers.LlamaForCausalLM(config).to(device="cuda", dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, config.vocab_size, (args.batch, args.prompt), generator=gen).cuda()
    mask = torch.ones_like(ids)
    kwargs = dict(attention_mask=mask, max_new_tokens=args.new, do_sample=False, pad_token_id=0)

    with torch.inference_mode():
        out = model.generate(ids, **kwargs)             # warm-up: kernels, cuBLAS, allocator
        torch.cuda.synchronize()
        new_tokens = out.shape[1] - args.prompt
        allocs_before = torch.cuda.memory_stats().get("allocation.all.allocated", 0)
        calls = []
        for _ in range(args.timed):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = model.generate(ids, **kwargs)
            torch.cuda.synchronize()
            calls.append(time.perf_counter() - t)
            new_tokens = min(new_tokens, out.shape[1] - args.prompt)
        block_allocs = torch.cuda.memory_stats().get("allocation.all.allocated", 0) - allocs_before
    tokens = args.batch * new_tokens * args.timed
    tps = tokens / sum(calls)
    print("generated %d tokens per call (batch %d x %d new) in %d timed calls: %.1f tokens/s"
          % (args.batch * new_tokens, args.batch, new_tokens, args.timed, tps))
    print("GENBENCH " + json.dumps({
        "tokens_per_s": tps, "calls_s": calls, "new_tokens": new_tokens, "batch": args.batch,
        "prompt": args.prompt, "reserved": torch.cuda.memory_reserved(), "torch": torch.__version__,
        # Blocks the caching allocator handed out during the timed calls (each is one
        # allocation and, later, one free callback when block tracking is on).
        "block_allocs": block_allocs,
        "transformers": transformers.__version__, "gpu": torch.cuda.get_device_name(0),
    }), flush=True)


# ----------------------------------------------------------------------------------------
# the comparison driver

def worker_argv(args):
    return [sys.executable, os.path.abspath(__file__), "--batch", str(args.batch), "--prompt", str(args.prompt),
            "--new", str(args.new), "--timed", str(args.timed), "--layers", str(args.layers),
            "--hidden", str(args.hidden), "--intermediate", str(args.intermediate)]


def run_one(argv, scratch, limit):
    """Runs one process; returns (tokens/s or None, wall seconds, a line saying what failed,
    the GENBENCH figures or {})."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", NCCL_NVLS_ENABLE="0")
    env.pop("LD_PRELOAD", None)
    err_path = os.path.join(scratch, "stderr")
    t = time.perf_counter()
    with open(err_path, "wb") as err:
        try:
            p = subprocess.run(["timeout", "-k", "10", str(limit)] + argv, stdout=subprocess.PIPE, stderr=err,
                               stdin=subprocess.DEVNULL, env=env, timeout=limit + 30)
            out, rc = p.stdout.decode(errors="replace"), p.returncode
        except subprocess.TimeoutExpired:
            out, rc = "", None
    wall = time.perf_counter() - t
    tps = None
    bench = {}
    for line in out.splitlines():
        if line.startswith("GENBENCH "):
            try:
                bench = json.loads(line[len("GENBENCH "):])
                tps = float(bench["tokens_per_s"])
            except (ValueError, KeyError):
                pass
    problem = ""
    if rc != 0 or tps is None:
        with open(err_path, "rb") as f:
            text = f.read().decode(errors="replace")
        # the program's own stderr comes before leakscope's report (text or JSON)
        m = re.search(r'(?m)^leakscope \S+ report:|\{\s*"leakscope_version"', text)
        tail = (text[:m.start()] if m else text)[-1500:]
        problem = "rc %s, no figure: ...%s" % (rc, tail.replace("\n", " | ")[-600:])
    return tps, wall, problem, bench


def compare(args):
    leakscope = os.path.abspath(args.leakscope)
    if not os.path.isfile(leakscope):
        sys.exit("leakscope not found at %s" % leakscope)
    base = worker_argv(args)
    if args.shim_formats == "both":
        plan = lambda r: ["text", "json"]  # noqa: E731
    elif args.shim_formats == "text-gpu":
        plan = lambda r: ["text", "gpu"]  # noqa: E731
    elif args.shim_formats == "blocks":
        plan = lambda r: ["gpu", "gpu-noblocks"]  # noqa: E731
    elif args.shim_formats == "blocks-all":
        plan = lambda r: ["text", "text-noblocks"]  # noqa: E731
    elif args.shim_formats == "alternate":
        plan = lambda r: ["text" if r % 2 == 0 else "json"]  # noqa: E731
    else:
        plan = lambda r: [args.shim_formats]  # noqa: E731

    t0 = time.perf_counter()
    rounds = []  # [{"bare": (tps, wall), "text": (...), ...}]
    benches = {}  # variant -> [GENBENCH figures]
    problems = []
    last_round = None
    for r in range(args.rounds):
        elapsed = time.perf_counter() - t0
        if last_round is not None and elapsed + last_round > args.budget_s:
            problems.append("stopped after %d rounds: the next would end past --budget-s %.0f s" % (r, args.budget_s))
            break
        start = time.perf_counter()
        figures = {}
        for variant in ["bare"] + plan(r):
            scratch = tempfile.mkdtemp(prefix="gpu-generate-")
            try:
                if variant == "bare":
                    argv = base
                else:
                    fmt = {"text": [], "json": ["--format", "json"], "gpu": ["--track", "gpu"],
                           "gpu-noblocks": ["--track", "gpu", "--no-torch-blocks"],
                           "text-noblocks": ["--no-torch-blocks"]}[variant]
                    argv = [leakscope, "run", "--out", os.path.join(scratch, "rec")] + fmt + ["--"] + base
                tps, wall, problem, bench = run_one(argv, scratch, args.limit_s)
                benches.setdefault(variant, []).append(bench)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            figures[variant] = (tps, wall)
            if problem:
                problems.append("round %d %s: %s" % (r + 1, variant, problem))
            print("round %d %-5s %s tokens/s, %.1f s wall" % (
                r + 1, variant, "%.1f" % tps if tps else "n/a", wall), file=sys.stderr, flush=True)
        rounds.append(figures)
        last_round = time.perf_counter() - start

    variants = ["bare"] + [v for v in ("text", "json", "gpu", "text-noblocks", "gpu-noblocks")
                           if any(v in f for f in rounds)]
    label = {"bare": "bare", "text": "leakscope (text report)", "json": "leakscope (--format json)",
             "gpu": "leakscope --track gpu", "text-noblocks": "leakscope --no-torch-blocks",
             "gpu-noblocks": "leakscope --track gpu --no-torch-blocks"}

    def cell(v):
        return "%.1f" % v if v is not None else "n/a"

    def med(variant, idx):
        vals = [f[variant][idx] for f in rounds if variant in f and f[variant][idx] is not None]
        return statistics.median(vals) if vals else None

    lines = ["### Generation throughput, random-weight Llama (%d hidden, %d layers, bf16), batch %d, %d prompt + %d "
             "generated tokens, %d timed generate calls per process" % (args.hidden, args.layers, args.batch,
                                                                       args.prompt, args.new, args.timed), ""]
    lines.append("| round | " + " | ".join("%s tokens/s" % label[v] for v in variants) + " |")
    lines.append("|---" * (len(variants) + 1) + "|")
    for i, f in enumerate(rounds):
        lines.append("| %d | " % (i + 1) + " | ".join(cell(f[v][0]) if v in f else "" for v in variants) + " |")
    medians = {v: med(v, 0) for v in variants}
    lines.append("| median | " + " | ".join(cell(medians[v]) for v in variants) + " |")
    ratio = ["%.3f" % (medians[v] / medians["bare"]) if medians[v] and medians["bare"] else "n/a" for v in variants]
    lines.append("| ratio to bare (medians) | " + " | ".join(ratio) + " |")
    shim = [f[v][0] for f in rounds for v in ("text", "json", "text-noblocks") if v in f and f[v][0] is not None]
    gpu_only = [f["gpu"][0] for f in rounds if "gpu" in f and f["gpu"][0] is not None]
    if gpu_only and medians["bare"]:
        lines += ["", "GPU-only runs (--track gpu): median %.1f tokens/s, ratio to bare %.3f." % (
            statistics.median(gpu_only), statistics.median(gpu_only) / medians["bare"])]
    for on, off in (("gpu", "gpu-noblocks"), ("text", "text-noblocks")):
        lines += blocks_cost(on, off, medians, benches, args, label)
    if shim and medians["bare"]:
        lines += ["", "All leakscope runs together: median %.1f tokens/s, ratio leakscope/bare %.3f." % (
            statistics.median(shim), statistics.median(shim) / medians["bare"])]
    lines += ["", "| wall seconds per process (median; leakscope's include its end-of-run report) | "
              + " | ".join(label[v] for v in variants) + " |", "|---" * (len(variants) + 1) + "|",
              "| wall s | " + " | ".join(cell(med(v, 1)) for v in variants) + " |"]
    if problems:
        lines += ["", "Problems:"] + ["- " + p for p in problems]
    lines += ["", "Total %.0f s." % (time.perf_counter() - t0)]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    traced = [f[v][0] for f in rounds for v in f if v != "bare" and f[v][0] is not None]
    return 0 if all(f.get("bare", (None,))[0] for f in rounds) and traced else 1


def blocks_cost(on, off, medians, benches, args, label):
    """Lines estimating what PyTorch block tracking costs: the throughput ratio with blocks on
    and off, and the extra time per block event (one allocation and one free callback per
    block the caching allocator handed out during the timed calls)."""
    if not medians.get(on) or not medians.get(off):
        return []
    allocs = [b.get("block_allocs") for b in benches.get(on, []) if b.get("block_allocs")]
    tokens = args.batch * args.new * args.timed
    lines = ["", "PyTorch block tracking, %s vs %s: median %.1f vs %.1f tokens/s, ratio on/off %.3f." % (
        label[on], label[off], medians[on], medians[off], medians[on] / medians[off])]
    if allocs:
        per_run = statistics.median(allocs)
        extra_s = tokens / medians[on] - tokens / medians[off]
        lines.append("The timed calls handed out %d blocks per process (allocation.all.allocated): about "
                     "%.2f us per block event (allocation or free callback), from the medians." % (
                         per_run, 1e6 * extra_s / (2 * per_run)))
    return lines


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--new", type=int, default=128, help="generated tokens per call")
    ap.add_argument("--timed", type=int, default=5, help="timed generate calls after the warm-up")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--compare", action="store_true", help="run the bare/leakscope comparison")
    ap.add_argument("--leakscope", default=os.environ.get("LEAKSCOPE_BIN", ".gpu/leakscope"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shim-formats", default="alternate", choices=("alternate", "both", "text", "json", "gpu", "text-gpu",
                                                                      "blocks", "blocks-all"))
    ap.add_argument("--budget-s", type=float, default=290.0, help="no round starts that would end after this")
    ap.add_argument("--limit-s", type=int, default=240, help="time limit of one process")
    ap.add_argument("--out", default=None, help="also write the markdown tables to this file")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(args)
    measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
