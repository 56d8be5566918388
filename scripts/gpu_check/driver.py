#!/usr/bin/env python3
"""The running half of the GPU check: builds the native pieces, runs every scenario's target
bare and under `leakscope run --format json`, keeps what each run left, then has compare.py
judge it and writes the results. scripts/gpu-check.sh is its entry point.

This file owns: finding the tools (nvcc, cuda.h, libcuda/libcudart, compute-sanitizer,
leakscope), building native/*.c|cu, the scenario list (command, environment, time limit),
running commands with hard time limits, the time budget of the whole check, and the output
folder (at most 4 files: gpu-check.md, results.json, logs.txt, gpu-check-artifacts.tar.gz).

    python3 driver.py --out OUTDIR [--leakscope PATH] [--jobs N] [--deadline-s S]
                      [--only a,b] [--bare-only] [--work DIR]

Nothing here aborts the check: a build that fails, a target that crashes or hangs, a missing
tool, each becomes FAIL rows; the exit status is 1 if any check failed, else 0.
"""

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402
import compare_aging  # noqa: E402

TARGETS = os.path.join(HERE, "targets")
NATIVE = os.path.join(HERE, "native")

# Time limits (seconds) per command; the whole check also has a deadline (--deadline-s).
LIMIT_BARE = 120
LIMIT_SHIM = 180
LIMIT_NCCL = 180
LIMIT_NATIVE = 60
LIMIT_SANITIZER = 150
LIMIT_BUILD = 180
LIMIT_REPORT = 120

_print_lock = threading.Lock()


class Check(object):
    """State of one check run: paths, tools, deadline, log."""

    def __init__(self, args):
        self.args = args
        self.t0 = time.time()
        self.deadline = self.t0 + args.deadline_s
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
        self.art = os.path.join(self.work, "artifacts")
        self.rec = os.path.join(self.work, "recordings")
        self.bin = os.path.join(self.work, "bin")
        for d in (self.out, self.art, self.rec, self.bin):
            os.makedirs(d, exist_ok=True)
        self.python = real_python(args.python or sys.executable or "python3")
        self.leakscope = os.path.abspath(args.leakscope)
        self.skipped = {}
        self.logf = open(os.path.join(self.art, "driver.log"), "a")

    def log(self, msg):
        line = "[gpu-check %6.1fs] %s" % (time.time() - self.t0, msg)
        with _print_lock:
            print(line, flush=True)
            self.logf.write(line + "\n")
            self.logf.flush()

    def remaining(self):
        return self.deadline - time.time()


# ----------------------------------------------------------------------------------------
# running commands

def run_cmd(chk, argv, limit, stdout_path, stderr_path, env=None, cwd=None):
    """Runs argv under coreutils `timeout` (TERM at the limit, KILL 10 s later, to the whole
    process group), in its own session so a backstop can kill everything it started.
    Returns the meta dict compare.py reads."""
    left = chk.remaining() - 5
    if left < 15:
        return {"rc": None, "wall_s": 0.0, "timed_out": False, "skipped": "time budget of the check used up",
                "argv": argv}
    limit = int(min(limit, left))
    full = ["timeout", "-k", "10", str(limit)] + list(argv)
    t = time.time()
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        try:
            p = subprocess.Popen(full, stdout=so, stderr=se, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                 start_new_session=True)
        except OSError as e:
            se.write(("cannot start: %r\n" % (e,)).encode())
            return {"rc": 127, "wall_s": 0.0, "timed_out": False, "skipped": None, "argv": argv}
        try:
            rc = p.wait(timeout=limit + 30)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            try:  # anything the command left behind in its session
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        if rc is None:
            rc = p.wait()
    wall = time.time() - t
    # 124: TERM at the limit; 137 or -9: KILL 10 s later (timeout kills its own group, itself too)
    timed_out = rc is None or rc in (124, 137) or (rc < 0 and wall >= limit)
    return {"rc": rc, "wall_s": round(wall, 2), "timed_out": timed_out, "limit_s": limit, "skipped": None,
            "argv": argv}


def quick(argv, limit=60, env=None):
    """(rc, stdout+stderr) of a short command; never raises."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=limit, env=env)
        return p.returncode, p.stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, repr(e)


# ----------------------------------------------------------------------------------------
# tools

def real_python(py):
    """The interpreter itself (sys.executable), not a wrapper script such as a pyenv shim:
    leakscope follows every process, and a wrapper adds processes and time."""
    rc, out = quick([py, "-c", "import sys; print(sys.executable)"], 60)
    lines = out.strip().splitlines() if rc == 0 else []
    return lines[-1].strip() if lines and lines[-1].startswith("/") else py


def cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and os.path.isdir(os.environ[var]):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    for d in ("/usr/local/cuda", "/usr/local/cuda-13.0", "/opt/cuda"):
        if os.path.isdir(d):
            return d
    return None


def find_tool(name, home):
    found = shutil.which(name)
    if found:
        return found
    for cand in ([os.path.join(home, "bin", name), os.path.join(home, name, name)] if home else []) + \
            ["/usr/local/cuda/bin/" + name, "/usr/local/cuda/%s/%s" % (name, name)]:
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def python_site_dirs(py):
    rc, out = quick([py, "-c", "import site, sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))"], 30)
    return [l.strip() for l in out.splitlines() if l.strip().startswith("/")] if rc == 0 else []


def find_first(patterns):
    for pat in patterns:
        for hit in sorted(glob.glob(pat)):
            if os.path.exists(hit):
                return hit
    return None


def locate_cuda(chk):
    """Where cuda.h, libcudart.so.13 and libcuda.so.1 are, and a link folder holding the
    unversioned names the linker wants (libcudart.so, libcuda.so)."""
    home = cuda_home()
    sites = python_site_dirs(chk.python)
    roots = ([home, os.path.join(home, "targets", "x86_64-linux")] if home else []) + \
        [os.path.join(s, "nvidia", "cu13") for s in sites] + [os.path.join(s, "nvidia", "cuda_runtime") for s in sites]
    cuda_h = find_first([os.path.join(r, "include", "cuda.h") for r in roots])
    cudart = find_first([os.path.join(r, d, "libcudart.so.13*") for r in roots for d in ("lib64", "lib")] +
                        [os.path.join(r, d, "libcudart.so.1[0-9]*") for r in roots for d in ("lib64", "lib")])
    rc, out = quick(["ldconfig", "-p"], 30)
    libcuda = None
    for line in out.splitlines():
        m = re.search(r"libcuda\.so\.1 .*x86-64.*=> (\S+)", line)
        if m:
            libcuda = m.group(1)
            break
    libcuda = libcuda or find_first(["/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1",
                                     "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"])
    link = os.path.join(chk.bin, "link")
    os.makedirs(link, exist_ok=True)
    for name, real in (("libcudart.so", cudart), ("libcuda.so", libcuda)):
        dst = os.path.join(link, name)
        if real and not os.path.lexists(dst):
            os.symlink(real, dst)
    return {"home": home, "cuda_h": cuda_h, "cudart": cudart, "libcuda": libcuda, "link": link,
            "nvcc": find_tool("nvcc", home), "sanitizer": find_tool("compute-sanitizer", home)}


def build(chk, cuda, wanted):
    """Builds what the scenarios in ``wanted`` need: the pluggable allocator (gcc) and the
    planted-leak program in both runtime flavours (nvcc). Returns {name: path or None};
    everything goes to artifacts/build.log."""
    built = {}
    blog = open(os.path.join(chk.art, "build.log"), "a")
    blog.write("cuda: %s\n" % json.dumps(cuda, indent=1))

    def attempt(name, variants, out):
        for argv in variants:
            blog.write("\n$ %s\n" % " ".join(argv))
            blog.flush()
            rc, text = quick(argv, LIMIT_BUILD)
            blog.write(text + "\n[rc %s]\n" % rc)
            if rc == 0 and os.path.exists(out):
                built[name] = out
                chk.log("built %s" % name)
                return
        built[name] = None
        chk.log("BUILD FAILED: %s (see build.log)" % name)

    rpath = []
    if cuda["cudart"]:
        rpath = ["-Xlinker", "-rpath=" + os.path.dirname(cuda["cudart"])]
    # the pluggable allocator
    so = os.path.join(chk.bin, "libcumem_alloc.so")
    if "mempool" not in wanted and "torch-blocks" not in wanted:
        pass
    elif cuda["cuda_h"]:
        inc = os.path.dirname(cuda["cuda_h"])
        src = os.path.join(NATIVE, "cumem_alloc.c")
        base = ["gcc", "-O2", "-g", "-shared", "-fPIC", "-o", so, src, "-I" + inc]
        stub_dirs = [d for d in ([os.path.join(cuda["home"], s) for s in
                                  ("lib64/stubs", "targets/x86_64-linux/lib/stubs", "lib/stubs")] if cuda["home"] else [])
                     if os.path.isdir(d)]
        variants = [base + ["-L" + d for d in stub_dirs] + ["-lcuda"],
                    base + ["-L" + cuda["link"], "-lcuda"]]
        attempt("cumem_alloc", variants, so)
    else:
        blog.write("no cuda.h found: cannot build the pluggable allocator\n")
        built["cumem_alloc"] = None
    # the planted-leak program, shared and static CUDA runtime
    for flavour in ("shared", "static"):
        exe = os.path.join(chk.bin, "planted_" + flavour)
        if "planted-" + flavour not in wanted:
            continue
        if not cuda["nvcc"]:
            blog.write("no nvcc found\n")
            built["planted-" + flavour] = None
            continue
        base = [cuda["nvcc"], "-O0", "-g", "-cudart", flavour, "-Xcompiler", "-rdynamic",
                os.path.join(NATIVE, "planted_leaks.cu"), "-o", exe]
        # nvcc's own library path first; then our link folder and the runtime's folder
        # (a pip-installed toolkit keeps libcudadevrt.a / libcudart_static.a there, in lib/).
        libdirs = ["-L" + cuda["link"]] + (["-L" + os.path.dirname(cuda["cudart"])] if cuda["cudart"] else [])
        attempt("planted-" + flavour, [base + ["-lcuda"] + rpath,
                                       base + libdirs + ["-lcuda"] + rpath], exe)
    blog.close()
    return built


# ----------------------------------------------------------------------------------------
# scenarios

def base_env(chk):
    env = dict(os.environ)
    for var in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "LD_PRELOAD", "CUDA_LAUNCH_BLOCKING"):
        env.pop(var, None)
    env.update({
        "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
        # NVLink multicast stays off everywhere (the machines' rule); no other NCCL_* variable.
        "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
        "CUPY_CACHE_DIR": os.path.join(chk.work, "cupy-cache"),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
    })
    return env


# Extra leakscope arguments of a scenario (the others have none): "run" goes to `leakscope
# run`; "report" to the `leakscope report` whose JSON the checks read, a list or a function
# of the GPUCHECK line's figures (of the run under leakscope; {} when it printed none)
# returning one. `leakscope report` does not remember the run's aging options.
LEAKSCOPE_ARGS = {
    compare_aging.SCENARIO: {"run": compare_aging.RUN_ARGS, "report": compare_aging.report_args},
}


def scenarios(chk, built):
    """[(name, argv, extra env, shim time limit, needs)]; ``needs`` names a build product."""
    py = chk.python
    t = lambda f: os.path.join(TARGETS, f)  # noqa: E731
    return [
        ("planted-shared", [built.get("planted-shared") or "missing"], {}, LIMIT_NATIVE, "planted-shared"),
        ("planted-static", [built.get("planted-static") or "missing"], {}, LIMIT_NATIVE, "planted-static"),
        ("caching", [py, t("torch_alloc.py"), "caching"], {}, LIMIT_SHIM, None),
        ("expandable", [py, t("torch_alloc.py"), "expandable"],
         {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, LIMIT_SHIM, None),
        ("async", [py, t("torch_alloc.py"), "async"],
         {"PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync"}, LIMIT_SHIM, None),
        ("pinned", [py, t("torch_pinned.py")], {}, LIMIT_SHIM, None),
        ("graph", [py, t("torch_graph.py")], {}, LIMIT_SHIM, None),
        ("mempool", [py, t("torch_mempool.py"), built.get("cumem_alloc") or "missing"], {}, LIMIT_SHIM, "cumem_alloc"),
        ("cupy", [py, t("cupy_pool.py")], {}, LIMIT_SHIM, None),
        ("nccl", [py, t("torch_nccl.py")], {}, LIMIT_NCCL, None),
        # Runs without the C allocator too (then without its pluggable-MemPool leak).
        ("torch-blocks", [py, t("torch_blocks.py"), built.get("cumem_alloc") or "missing"], {}, LIMIT_SHIM, None),
        # leakscope arguments of its own: LEAKSCOPE_ARGS
        (compare_aging.SCENARIO, [py, t("torch_aging.py")], {}, LIMIT_SHIM, None),
    ]


def write_meta(path, meta, env_extra):
    meta = dict(meta, env=env_extra)
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)


def run_scenario(chk, cuda, built, sc):
    """Bare run, compute-sanitizer run (planted-*), run under leakscope; all into
    artifacts/<name>/. Sequential within a scenario: the bare run first (it also warms
    CuPy's kernel cache, so compilation does not happen under the shim)."""
    name, argv, extra, limit, needs = sc
    d = os.path.join(chk.art, name)
    os.makedirs(d, exist_ok=True)
    env = base_env(chk)
    env.update(extra)
    if needs and not built.get(needs):
        for kind in ("bare", "shim"):
            write_meta(os.path.join(d, kind + ".meta.json"),
                       {"rc": None, "wall_s": 0, "timed_out": False, "skipped": "build of %s failed" % needs}, extra)
        chk.skipped[name] = "build of %s failed (build.log)" % needs
        chk.log("%s: skipped, build failed" % name)
        return

    def p(kind, ext):
        return os.path.join(d, "%s.%s" % (kind, ext))

    chk.log("%s: bare run" % name)
    meta = run_cmd(chk, argv, min(limit, LIMIT_BARE), p("bare", "out"), p("bare", "err"), env, chk.work)
    write_meta(p("bare", "meta.json"), meta, extra)
    chk.log("%s: bare rc=%s in %.1fs" % (name, meta["rc"], meta["wall_s"]))

    if name.startswith("planted-") and not chk.args.bare_only:
        if cuda["sanitizer"]:
            chk.log("%s: compute-sanitizer run" % name)
            san_argv = [cuda["sanitizer"], "--tool", "memcheck", "--leak-check", "full",
                        "--log-file", p("sanitizer", "log")] + argv
            meta = run_cmd(chk, san_argv, LIMIT_SANITIZER, p("sanitizer", "out"), p("sanitizer", "err"), env, chk.work)
            chk.log("%s: compute-sanitizer rc=%s in %.1fs" % (name, meta["rc"], meta["wall_s"]))
        else:
            meta = {"rc": None, "wall_s": 0, "timed_out": False, "skipped": "compute-sanitizer not found"}
        write_meta(p("sanitizer", "meta.json"), meta, extra)

    if chk.args.bare_only:
        return
    if not os.path.isfile(chk.leakscope):
        write_meta(p("shim", "meta.json"), {"rc": None, "wall_s": 0, "timed_out": False,
                                            "skipped": "leakscope not found at %s" % chk.leakscope}, extra)
        return
    rec = os.path.join(chk.rec, name)
    shutil.rmtree(rec, ignore_errors=True)
    # `run --format json` prints its report on stderr, which leakscope writes unbuffered (on
    # the development machine a 71 MB report took 19 s that way, 17 s of it system time,
    # against 0.6 s for `leakscope report` to a file), so the run's own report is limited to
    # the top sites; the complete report comes from `leakscope report` of the same recording.
    extra_ls = LEAKSCOPE_ARGS.get(name, {})
    shim_argv = [chk.leakscope, "run", "--format", "json", "--top", str(chk.args.run_top)] + \
        list(extra_ls.get("run", [])) + ["--out", rec, "--"] + argv
    chk.log("%s: run under leakscope" % name)
    meta = run_cmd(chk, shim_argv, limit, p("shim", "out"), p("shim", "err"), env, chk.work)
    write_meta(p("shim", "meta.json"), meta, extra)
    chk.log("%s: leakscope rc=%s in %.1fs" % (name, meta["rc"], meta["wall_s"]))

    # The run's (top-limited) report is cut out of stderr: the program's stderr stays.
    err = compare.read_text(p("shim", "err"))
    run_report, rest = compare.split_report(err)
    report = None
    if os.path.isdir(rec):
        full = os.path.join(chk.work, "report-%s.json" % name)
        report_extra = extra_ls.get("report", [])
        if callable(report_extra):
            shown = compare.parse_gpucheck(compare.read_text(p("shim", "out"))) or {}
            report_extra = report_extra(shown.get("figures") or {})
        report_argv = [chk.leakscope, "report", rec, "--format", "json", "--top", str(chk.args.report_top)] + \
            list(report_extra)
        rmeta = run_cmd(chk, report_argv, LIMIT_REPORT, full, p("report", "err"), env, chk.work)
        if report_extra:
            chk.log("%s: leakscope report with %s" % (name, " ".join(report_extra)))
            write_meta(p("report", "meta.json"), rmeta, extra)
        chk.log("%s: leakscope report rc=%s in %.1fs, %d bytes" % (
            name, rmeta["rc"], rmeta["wall_s"], os.path.getsize(full) if os.path.exists(full) else 0))
        if rmeta["rc"] == 0:
            try:
                with open(full) as f:
                    report = json.load(f)
            except (OSError, ValueError) as e:
                rest += "\n[gpu-check: the report of `leakscope report` does not parse: %r]\n" % (e,)
        if os.path.exists(full) and os.path.getsize(full) > (200 << 20):
            os.remove(full)  # the slim copy is kept below; a huge full one is not worth the disk
    if report is None and run_report is not None:
        rest += "\n[gpu-check: using the run's own report, limited to --top %d sites]\n" % chk.args.run_top
        report = run_report
    with open(p("shim", "err"), "w") as f:
        f.write(rest)
    if report is not None:
        with open(os.path.join(d, "report.json"), "w") as f:
            json.dump(compare.slim_report(report), f, indent=1)


# ----------------------------------------------------------------------------------------
# environment and outputs

def collect_env(chk, cuda):
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
           "mode": "bare-only" if chk.args.bare_only else "bare and under leakscope",
           "leakscope": chk.leakscope}
    rc, out = quick(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 30)
    if rc == 0 and out.strip():
        parts = [x.strip() for x in out.strip().splitlines()[0].split(",")]
        env["gpu"] = "%s (%s)" % (parts[0], parts[2]) if len(parts) > 2 else parts[0]
        env["driver"] = parts[1] if len(parts) > 1 else None
    else:
        env["gpu"] = "nvidia-smi failed: %s" % out.strip()[:200]
    rc, out = quick(["nvidia-smi"], 30)
    m = re.search(r"CUDA Version:\s*([\d.]+)", out or "")
    env["cuda_driver"] = m.group(1) if m else None
    code = ("import json, platform\n"
            "r = {'python': platform.python_version()}\n"
            "try:\n"
            "    import torch\n"
            "    r['torch'] = torch.__version__; r['cuda_torch'] = torch.version.cuda\n"
            "    try:\n"
            "        import torch.cuda.nccl as n; v = n.version(); r['nccl'] = '.'.join(map(str, v)) if isinstance(v, tuple) else str(v)\n"
            "    except Exception as e: r['nccl'] = repr(e)\n"
            "except Exception as e: r['torch'] = repr(e)\n"
            "try:\n"
            "    import cupy; r['cupy'] = cupy.__version__\n"
            "except Exception as e: r['cupy'] = repr(e)\n"
            "print(json.dumps(r))\n")
    rc, out = quick([chk.python, "-c", code], 120)
    try:
        env.update(json.loads(out.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        env["torch"] = "version query failed: %s" % out[-300:]
    if cuda["nvcc"]:
        rc, out = quick([cuda["nvcc"], "--version"], 30)
        m = re.search(r"release ([\d.]+), (V[\d.]+)", out)
        env["nvcc"] = "%s (%s)" % (m.group(1), m.group(2)) if m else out.strip()[-80:]
    if cuda["sanitizer"]:
        rc, out = quick([cuda["sanitizer"], "--version"], 30)
        m = re.search(r"Version\s+(\S+)", out)
        env["sanitizer"] = m.group(1) if m else out.strip()[-80:]
    if os.path.isfile(chk.leakscope):
        rc, out = quick([chk.leakscope, "--version"], 30)
        env["leakscope"] = "%s (%s)" % (out.strip(), chk.leakscope)
    else:
        env["leakscope"] = "NOT FOUND at %s" % chk.leakscope
    return env


def clip(text, head=60000, tail=200000):
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n[... %d characters left out ...]\n" % (len(text) - head - tail) + text[-tail:]


def write_outputs(chk, env, rows):
    env = dict(env, skipped=chk.skipped)
    with open(os.path.join(chk.art, "env.json"), "w") as f:
        json.dump(env, f, indent=1)
    md = compare.render_markdown(rows, env)
    with open(os.path.join(chk.out, "gpu-check.md"), "w") as f:
        f.write(md)
    failed = sum(1 for r in rows if r["result"] == compare.FAIL)
    with open(os.path.join(chk.out, "results.json"), "w") as f:
        json.dump({"env": env, "failed": failed, "rows": rows}, f, indent=1, default=str)
    # logs.txt: every log of every run, one after the other (reports are in the tarball)
    with open(os.path.join(chk.out, "logs.txt"), "w") as out:
        for top in ("driver.log", "build.log", "env.json"):
            path = os.path.join(chk.art, top)
            if os.path.exists(path):
                out.write("\n===== %s =====\n%s" % (top, clip(compare.read_text(path))))
        for name in compare.SCENARIOS:
            d = os.path.join(chk.art, name)
            if not os.path.isdir(d):
                continue
            for fn in sorted(os.listdir(d)):
                if fn == "report.json":
                    continue
                out.write("\n===== %s/%s =====\n%s" % (name, fn, clip(compare.read_text(os.path.join(d, fn)))))
    # the artifacts (slim reports, logs, metas) for re-judging with compare.py --evaluate
    tar_path = os.path.join(chk.out, "gpu-check-artifacts.tar.gz")
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(chk.art, arcname="artifacts")
    if os.path.getsize(tar_path) > 15 << 20:  # over what comes back from the GPU machine
        chk.log("artifacts tarball is %d bytes: rebuilt without the reports" % os.path.getsize(tar_path))
        with tarfile.open(tar_path, "w:gz") as tar:
            tar.add(chk.art, arcname="artifacts", filter=lambda ti: None if ti.name.endswith("report.json") else ti)
    return md, failed


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for gpu-check.md, results.json, logs.txt, the tarball")
    ap.add_argument("--leakscope", default=os.environ.get("LEAKSCOPE_BIN", ".gpu/leakscope"),
                    help="the leakscope binary (its shim next to it); default $LEAKSCOPE_BIN or .gpu/leakscope")
    ap.add_argument("--python", default=None, help="the Python with torch (default: this one)")
    ap.add_argument("--report-top", type=int, default=3000,
                    help="--top of the `leakscope report` the checks read (GPU sites rank high; "
                         "the gpu section and totals are computed before the limit)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("GPUCHECK_JOBS", "3")),
                    help="scenarios run at once (default 3; each scenario's runs are sequential)")
    ap.add_argument("--deadline-s", type=float, default=float(os.environ.get("GPUCHECK_DEADLINE_S", "400")),
                    help="the whole check's time budget; later runs are skipped (default 400)")
    ap.add_argument("--only", default=None, help="comma-separated scenario names")
    ap.add_argument("--bare-only", action="store_true",
                    help="run the targets without leakscope only (checks the targets themselves)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a new one under /tmp)")
    ap.add_argument("--run-top", type=int, default=20,
                    help="--top of the `leakscope run` report on stderr (the checks use `leakscope report`)")
    args = ap.parse_args(argv)

    chk = Check(args)
    chk.log("work folder %s, output %s, leakscope %s" % (chk.work, chk.out, chk.leakscope))
    if not args.bare_only and not os.path.isfile(chk.leakscope):
        chk.log("WARNING: leakscope not found at %s: every leakscope run will FAIL" % chk.leakscope)
    elif not args.bare_only:
        shim = os.path.join(os.path.dirname(chk.leakscope), "libleakscope_shim.so")
        if not os.path.isfile(shim) and not os.environ.get("LEAKSCOPE_SHIM"):
            chk.log("WARNING: no libleakscope_shim.so next to %s" % chk.leakscope)

    cuda = locate_cuda(chk)
    chk.log("cuda: %s" % json.dumps({k: v for k, v in cuda.items()}))
    env = collect_env(chk, cuda)
    chk.log("env: %s" % json.dumps(env))
    want = set(compare.SCENARIOS)
    if args.only:
        want = set(x.strip() for x in args.only.split(",") if x.strip())
        unknown = want - set(compare.SCENARIOS)
        if unknown:
            chk.log("unknown scenarios ignored: %s" % ", ".join(sorted(unknown)))
    built = build(chk, cuda, want)
    todo = [sc for sc in scenarios(chk, built) if sc[0] in want]

    def guarded(sc):
        try:
            run_scenario(chk, cuda, built, sc)
        except Exception as e:  # one scenario's trouble is its FAIL rows, never the check's end
            chk.log("%s: driver error %r" % (sc[0], e))
            chk.skipped[sc[0]] = "driver error: %r" % (e,)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(guarded, todo))

    rows = compare.evaluate(chk.art, [sc[0] for sc in todo], bare_only=args.bare_only)
    for name, why in sorted(chk.skipped.items()):
        if not any(r["scenario"] == name for r in rows):
            rows.append(compare.row(name, "scenario ran", None, None, compare.FAIL, why, as_bytes=False))
    md, failed = write_outputs(chk, env, rows)
    sys.stdout.write("\n" + md)
    chk.log("done in %.0f s: %d FAIL; outputs in %s; work folder %s" % (time.time() - chk.t0, failed, chk.out, chk.work))
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
