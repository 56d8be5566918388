#!/usr/bin/env python3
"""Aging benchmark driver: how soon does leakscope flag a slow leak, against the black box?

Builds bench/aging_workload.c, runs it under `leakscope run`, and every --poll seconds asks
`leakscope report --format json` (on the recording still being written) for its verdicts:

  - the per-site trend of the leak site (leaky_request_buffer), of the step site
    (grow_cache_segment) and of every churning site (churn_site_NNN: any significant
    verdict there is a false one);
  - the process-level black-box verdict on USS (and RSS) that leakscope computes on
    60 s medians of the process's readings (process["aging"]["uss"]["trend"]).

It also samples the workload's USS itself from /proc/PID/smaps_rollup every 5 s (the raw
black-box data) and stores the series in the --json result.

At the end (or on Ctrl-C) it prints a markdown summary: minutes until the leak is flagged,
false verdicts on the churning sites, minutes until the USS trend is flagged and the ratio,
the recording's size per hour, and the leak rate the workload printed against leakscope's
slope estimate. See bench/README-aging.md.

Python 3 standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKLOAD_C = BENCH / "aging_workload.c"
WORKLOAD_NAME = "aging_workload"

LEAK_FN = "leaky_request_buffer"
STEP_FN = "grow_cache_segment"
SITE_RE = re.compile(r"\b(leaky_request_buffer|grow_cache_segment|churn_site_\d+)\b")
# Host memory kinds of the report (everything but GPU device memory).
HOST_KINDS = {"host", "mapped", "pinned", "managed"}

REPORT_TIMEOUT_S = 300
USS_PERIOD_S = 5.0

# Workload options passed through (driver option -> workload option).
PASS_THROUGH = {
    "rate": "--rate",
    "sites": "--sites",
    "leak_share": "--leak-share",
    "step_every": "--step-every",
    "step_bytes": "--step-bytes",
    "seed": "--seed",
    "big": "--big",
}


def log(msg):
    print(f"[aging_detect {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- parsing the report -------------------------------------------------------------------


def num(v):
    """A finite float, or None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def parse_trend(t):
    """The trend object normalised, or None when absent/null/not an object."""
    if not isinstance(t, dict):
        return None
    return {
        "slope_bytes_per_hour": num(t.get("slope_bytes_per_hour")),
        "ci_low": num(t.get("ci_low")),
        "ci_high": num(t.get("ci_high")),
        "p_value": num(t.get("p_value")),
        "significant": t.get("significant") is True,
        "shape": t.get("shape") if isinstance(t.get("shape"), str) else None,
        # A site's trend names the series it describes: outstanding or outlived bytes.
        "basis": t.get("basis") if isinstance(t.get("basis"), str) else None,
    }


def growth(tr):
    """A significant upward verdict."""
    return bool(tr and tr["significant"] and (tr["slope_bytes_per_hour"] or 0) > 0)


def site_function(site):
    """The first frame (innermost first) naming one of the workload's sites, or None."""
    frames = site.get("frames") or []
    for fr in frames:
        if not isinstance(fr, dict):
            continue
        fn = fr.get("function")
        if isinstance(fn, str):
            m = SITE_RE.search(fn)
            if m:
                return m.group(1)
    return None


def workload_processes(report):
    procs = [p for p in (report.get("processes") or []) if isinstance(p, dict)]
    mine = []
    for p in procs:
        text = " ".join(
            str(x) for x in (p.get("command"), p.get("exe"), " ".join(map(str, p.get("argv") or [])))
            if x
        )
        if WORKLOAD_NAME in text:
            mine.append(p)
    return mine or procs


def pick(trends):
    """Among several sites of one function: a growth verdict first (the largest slope), else
    the first with a trend."""
    with_trend = [t for t in trends if t is not None]
    if not with_trend:
        return None
    flagged = [t for t in with_trend if growth(t)]
    if flagged:
        return max(flagged, key=lambda t: t["slope_bytes_per_hour"] or 0)
    sig = [t for t in with_trend if t["significant"]]
    return (sig or with_trend)[0]


def digest(report):
    """What one poll needs from a report."""
    procs = workload_processes(report)
    leak, step, churn = [], [], {}
    n_sites, n_sites_named, has_site_trend_key = 0, 0, False
    uss = rss = None
    has_aging = False
    for p in procs:
        aging = p.get("aging")
        if isinstance(aging, dict):
            has_aging = True
            u = aging.get("uss")
            r = aging.get("rss")
            uss = uss or parse_trend(u.get("trend") if isinstance(u, dict) else None)
            rss = rss or parse_trend(r.get("trend") if isinstance(r, dict) else None)
        for s in p.get("sites") or []:
            if not isinstance(s, dict) or s.get("memory") not in HOST_KINDS:
                continue
            n_sites += 1
            if "trend" in s:
                has_site_trend_key = True
            fn = site_function(s)
            if fn is None:
                continue
            n_sites_named += 1
            tr = parse_trend(s.get("trend"))
            if fn == LEAK_FN:
                leak.append(tr)
            elif fn == STEP_FN:
                step.append(tr)
            else:
                churn.setdefault(fn, []).append(tr)
    churn_flagged = []
    churn_with_trend = 0
    for fn, trs in sorted(churn.items()):
        if any(t is not None for t in trs):
            churn_with_trend += 1
        for t in trs:
            if t is not None and t["significant"]:
                churn_flagged.append({
                    "function": fn,
                    "slope_bytes_per_hour": t["slope_bytes_per_hour"],
                    "p_value": t["p_value"],
                    "shape": t["shape"],
                })
                break
    return {
        "processes": len(procs),
        "host_sites": n_sites,
        "workload_sites": n_sites_named,
        "leak_sites": len(leak),
        "step_sites": len(step),
        "churn_functions": len(churn),
        "churn_with_trend": churn_with_trend,
        "has_site_trend_field": has_site_trend_key,
        "has_aging": has_aging,
        "leak": pick(leak),
        "step": pick(step),
        "churn_flagged": churn_flagged,
        "uss": uss,
        "rss": rss,
    }


# ---- processes ----------------------------------------------------------------------------


def find_child(ppid, name):
    """The pid of ppid's child whose comm is name, or None."""
    try:
        kids = []
        for task in os.listdir(f"/proc/{ppid}/task"):
            try:
                with open(f"/proc/{ppid}/task/{task}/children") as f:
                    kids += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        kids = []
    if not kids:  # no /proc/PID/task/TID/children: scan /proc
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        st = f.read()
                    if int(st[st.rindex(")") + 2:].split()[1]) == ppid:
                        kids.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
    for k in kids:
        try:
            with open(f"/proc/{k}/comm") as f:
                if f.read().strip() == name[:15]:
                    return k
        except OSError:
            pass
    return None


def read_uss_kb(pid):
    """(USS, RSS) in kB from smaps_rollup, or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            vals[parts[0][:-1]] = int(parts[1])
    if "Private_Clean" not in vals and "Private_Dirty" not in vals:
        return None
    return vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0), vals.get("Rss")


class UssSampler(threading.Thread):
    def __init__(self, run_pid, t0, stop):
        super().__init__(daemon=True)
        self.run_pid, self.t0, self.stop = run_pid, t0, stop
        self.pid = None
        self.samples = []  # [t_s, uss_kb, rss_kb]
        self.collector = []  # [t_s, rss_kb] of `leakscope run` itself

    def run(self):
        while not self.stop.is_set():
            c = read_uss_kb(self.run_pid)
            if c is not None:
                self.collector.append([round(time.monotonic() - self.t0, 1), c[1]])
            if self.pid is None:
                self.pid = find_child(self.run_pid, WORKLOAD_NAME)
            if self.pid is not None:
                r = read_uss_kb(self.pid)
                if r is None:
                    if not os.path.exists(f"/proc/{self.pid}"):
                        return
                else:
                    self.samples.append([round(time.monotonic() - self.t0, 1), r[0], r[1]])
            self.stop.wait(USS_PERIOD_S if self.pid else 0.5)


def medians_60s(samples):
    """60 s medians of the USS samples: [[minute_index, median_kb, n], ...]."""
    buckets = {}
    for t, uss, _ in samples:
        buckets.setdefault(int(t // 60), []).append(uss)
    return [[k, statistics.median(v), len(v)] for k, v in sorted(buckets.items())]


def du_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
                total += st.st_blocks * 512
            except OSError:
                pass
    return total


def workload_lines(stderr_path):
    """The workload's `aging_workload: start|done key=value ...` lines, parsed."""
    out = {}
    try:
        text = Path(stderr_path).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = re.match(r"aging_workload: (start|done) (.*)", line.strip())
        if m:
            kv = {}
            for tok in m.group(2).split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    try:
                        kv[k] = float(v) if any(c in v for c in ".e") else int(v)
                    except ValueError:
                        kv[k] = v
            out[m.group(1)] = kv
    return out


# ---- results ------------------------------------------------------------------------------


def fmt_min(t_s):
    return None if t_s is None else round(t_s / 60.0, 2)


def fmt_trend(tr):
    if tr is None:
        return "no trend"
    s = tr["slope_bytes_per_hour"]
    p = tr["p_value"]
    txt = "SIGNIFICANT" if tr["significant"] else "n.s."
    if s is not None:
        txt += f" {s / 1000:.1f} KB/h"
    if p is not None:
        txt += f" p={p:.2g}"
    if tr["shape"]:
        txt += f" {tr['shape']}"
    if tr.get("basis") == "outlived":
        txt += " (outlived)"
    return txt


def summarize(polls, samples, args, workload, rec, run_elapsed_s, run_rc, interrupted):
    ok = [p for p in polls if p["ok"]]
    trend_polls = [p for p in ok if p["digest"]["has_site_trend_field"] or p["digest"]["has_aging"]]
    res = {
        "minutes_requested": args.minutes,
        "poll_s": args.poll,
        "interval": args.interval,
        "warmup": args.warmup,
        "polls": len(polls),
        "polls_ok": len(ok),
        "polls_with_trend_fields": len(trend_polls),
        "run_elapsed_s": round(run_elapsed_s, 1),
        "leakscope_run_exit": run_rc,
        "interrupted": interrupted,
        "trend_in_report": bool(trend_polls),
    }
    last_t = ok[-1]["t_s"] if ok else None

    # The leak site.
    leak_first = None
    for i, p in enumerate(ok):
        if growth(p["digest"]["leak"]):
            leak_first = i
            break
    res["leak_flagged_min"] = fmt_min(ok[leak_first]["t_s"]) if leak_first is not None else None
    res["leak_basis_at_flag"] = ok[leak_first]["digest"]["leak"].get("basis") if leak_first is not None else None
    if leak_first is not None:
        later = [p for p in ok[leak_first:] if p["digest"]["leak"] is not None]
        res["leak_stays_flagged"] = all(growth(p["digest"]["leak"]) for p in later)
        res["leak_polls_not_flagged_after_first"] = [
            fmt_min(p["t_s"]) for p in later if not growth(p["digest"]["leak"])]
    else:
        res["leak_stays_flagged"] = None
    last_leak = next((p["digest"]["leak"] for p in reversed(ok) if p["digest"]["leak"]), None)
    res["leak_trend_last"] = last_leak

    # The step site.
    step_first = next((p for p in ok if growth(p["digest"]["step"])), None)
    res["step_flagged_min"] = fmt_min(step_first["t_s"]) if step_first else None
    res["step_shape_at_flag"] = step_first["digest"]["step"]["shape"] if step_first else None
    last_step = next((p["digest"]["step"] for p in reversed(ok) if p["digest"]["step"]), None)
    res["step_trend_last"] = last_step

    # False verdicts on the churning sites.
    per_poll = [len(p["digest"]["churn_flagged"]) for p in ok]
    res["churn_flagged_max_per_poll"] = max(per_poll) if per_poll else None
    ever = sorted({c["function"] for p in ok for c in p["digest"]["churn_flagged"]})
    res["churn_flagged_distinct"] = len(ever) if ok else None
    res["churn_flagged_functions"] = ever
    res["churn_functions_seen_last"] = ok[-1]["digest"]["churn_functions"] if ok else None
    res["workload_sites_last"] = ok[-1]["digest"]["workload_sites"] if ok else None

    # The black box.
    uss_first = next((p for p in ok if growth(p["digest"]["uss"])), None)
    res["uss_flagged_min"] = fmt_min(uss_first["t_s"]) if uss_first else None
    rss_first = next((p for p in ok if growth(p["digest"]["rss"])), None)
    res["rss_flagged_min"] = fmt_min(rss_first["t_s"]) if rss_first else None
    res["uss_trend_last"] = next((p["digest"]["uss"] for p in reversed(ok) if p["digest"]["uss"]), None)
    res["rss_trend_last"] = next((p["digest"]["rss"] for p in reversed(ok) if p["digest"]["rss"]), None)
    lm, um = res["leak_flagged_min"], res["uss_flagged_min"]
    if lm and um is not None:
        res["ratio_blackbox_over_leakscope"] = round(um / lm, 2)
        res["ratio_is_lower_bound"] = False
    elif lm and last_t is not None:
        res["ratio_blackbox_over_leakscope"] = round(fmt_min(last_t) / lm, 2)
        res["ratio_is_lower_bound"] = True
    else:
        res["ratio_blackbox_over_leakscope"] = None
        res["ratio_is_lower_bound"] = None

    # The recording.
    size = du_bytes(rec)
    res["recording_bytes"] = size
    hours = run_elapsed_s / 3600.0
    res["recording_mb_per_hour"] = round(size / 1e6 / hours, 1) if hours > 0 else None

    # Leak rate: the workload's against leakscope's estimate.
    start, done = workload.get("start", {}), workload.get("done", {})
    res["workload"] = {"start": start, "done": done}
    res["workload_rate_per_s"] = done.get("rate_per_s")
    res["workload_intended_leak_kb_per_h"] = done.get(
        "intended_leak_kb_per_h", start.get("intended_leak_kb_per_h"))
    res["workload_measured_leak_kb_per_h"] = done.get("measured_leak_kb_per_h")
    if last_leak and last_leak["slope_bytes_per_hour"] is not None:
        res["leakscope_leak_kb_per_h"] = round(last_leak["slope_bytes_per_hour"] / 1000, 2)
        res["leakscope_leak_ci_kb_per_h"] = [
            None if last_leak[k] is None else round(last_leak[k] / 1000, 2)
            for k in ("ci_low", "ci_high")]
    else:
        res["leakscope_leak_kb_per_h"] = None
        res["leakscope_leak_ci_kb_per_h"] = None

    res["poll_log"] = [
        {
            "t_s": round(p["t_s"], 1),
            "t_min": fmt_min(p["t_s"]),
            "report_s": p["report_s"],
            "final": p.get("final", False),
            "ok": p["ok"],
            "error": p.get("error"),
            "recording_bytes": p.get("recording_bytes"),
            **({k: v for k, v in p["digest"].items()} if p["ok"] else {}),
        }
        for p in polls
    ]
    res["uss_samples"] = {
        "period_s": USS_PERIOD_S,
        "columns": ["t_s", "uss_kb", "rss_kb"],
        "rows": samples,
        "medians_60s": {"columns": ["minute", "uss_kb", "n"], "rows": medians_60s(samples)},
    }
    return res


def markdown(res):
    def v(x, unit=""):
        return "—" if x is None else f"{x}{unit}"

    lines = []
    if not res["trend_in_report"]:
        lines.append("**no trend in report**: leakscope's JSON has no `trend` on its sites and no "
                     "`aging` on its processes (this leakscope does not compute them yet).")
        lines.append("")
    m = res["minutes_requested"]
    last_poll = next((p for p in reversed(res["poll_log"]) if p["ok"]), None)
    span = last_poll["t_min"] if last_poll else 0
    leak_txt = (v(res["leak_flagged_min"], " min") if res["leak_flagged_min"] is not None
                else f"not within {span} min")
    if res["leak_stays_flagged"] is not None:
        leak_txt += " (stays flagged)" if res["leak_stays_flagged"] else " (NOT flagged at every later poll)"
    if res["leak_basis_at_flag"]:
        leak_txt += f", first from its {res['leak_basis_at_flag']} bytes"
    uss_txt = (v(res["uss_flagged_min"], " min") if res["uss_flagged_min"] is not None
               else f"not within {span} min")
    ratio = res["ratio_blackbox_over_leakscope"]
    ratio_txt = "—" if ratio is None else (f"≥ {ratio}×" if res["ratio_is_lower_bound"] else f"{ratio}×")
    step_txt = v(res["step_flagged_min"], " min")
    if res["step_shape_at_flag"]:
        step_txt += f" (shape at flag: {res['step_shape_at_flag']}"
        if res["step_trend_last"] and res["step_trend_last"]["shape"]:
            step_txt += f", last: {res['step_trend_last']['shape']}"
        step_txt += ")"
    lt = res["leak_trend_last"]
    est = "—"
    if res["leakscope_leak_kb_per_h"] is not None:
        ci = res["leakscope_leak_ci_kb_per_h"]
        est = f"{res['leakscope_leak_kb_per_h']} KB/h (CI {ci[0]} .. {ci[1]})"
        if lt and lt["p_value"] is not None:
            est += f", p={lt['p_value']:.2g}"
    false_txt = (f"max {v(res['churn_flagged_max_per_poll'])} at one poll, "
                 f"{v(res['churn_flagged_distinct'])} distinct")
    if res["churn_flagged_functions"]:
        false_txt += ": " + ", ".join(res["churn_flagged_functions"][:10])
        if len(res["churn_flagged_functions"]) > 10:
            false_txt += ", …"
    rows = [
        ("run", f"{res['run_elapsed_s'] / 60:.1f} min of {m} requested; {res['polls_ok']}/{res['polls']} "
                f"polls ok, {res['polls_with_trend_fields']} with trend fields"),
        ("workload sites in report (last poll)",
         f"{v(res['workload_sites_last'])} ({v(res['churn_functions_seen_last'])} distinct churn_site functions)"),
        ("leak site flagged after", leak_txt),
        ("step site flagged after", step_txt),
        ("false growth verdicts (churn sites)", false_txt),
        ("USS black box flagged after", uss_txt),
        ("RSS black box flagged after", v(res["rss_flagged_min"], " min")),
        ("black box / leakscope", ratio_txt),
        ("recording size", f"{res['recording_bytes'] / 1e6:.1f} MB, "
                           f"{v(res['recording_mb_per_hour'])} MB per hour"),
        ("workload rate", v(res["workload_rate_per_s"], " allocations/s")),
        ("workload leak rate (intended / measured)",
         f"{v(res['workload_intended_leak_kb_per_h'])} / {v(res['workload_measured_leak_kb_per_h'])} KB/h"),
        ("leakscope's slope for the leak site (last poll)", est),
        ("judged from", res.get("judged", "live polls")),
    ]
    collector = res.get("collector_rss_kb") or []
    if collector:
        first = next((c for c in collector if c[0] >= 60), collector[0])
        rows.append(("collector RSS (leakscope run)",
                     f"{first[1] / 1024:.1f} MiB at {first[0] / 60:.1f} min, "
                     f"{collector[-1][1] / 1024:.1f} MiB at {collector[-1][0] / 60:.1f} min"))
    live = res.get("live_polls")
    if live:
        rows.append(("live polls during the run (report while recording)",
                     f"{live.get('polls_ok')}/{live.get('polls')} ok; leak flagged at "
                     f"{v(live.get('leak_flagged_min'), ' min')}"))
    lines.append("| figure | value |")
    lines.append("|---|---|")
    for k, val in rows:
        lines.append(f"| {k} | {val} |")
    lines.append("")
    lines.append("| poll (min) | report (s) | leak site | step site | churn flagged | USS (black box) | disk MB |")
    lines.append("|---|---|---|---|---|---|---|")
    for p in res["poll_log"]:
        tag = f"{p['t_min']}" + (" (final)" if p["final"] else "")
        if not p["ok"]:
            lines.append(f"| {tag} | {v(p['report_s'])} | failed: {p['error']} | | | | |")
            continue
        lines.append(f"| {tag} | {v(p['report_s'])} | {fmt_trend(p['leak'])} | {fmt_trend(p['step'])} | "
                     f"{len(p['churn_flagged'])} of {p['churn_functions']} | {fmt_trend(p['uss'])} | "
                     f"{'' if p.get('recording_bytes') is None else round(p['recording_bytes'] / 1e6, 1)} |")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------


def evaluate(leakscope, rec, minutes, poll_s, report_extra):
    """The recording `rec` judged as it stood every `poll_s` seconds of event time after
    its first process started, up to `minutes` (`leakscope report --until`): detection
    times that do not depend on how long each live report took."""
    polls = []
    steps = int(minutes * 60 // poll_s)
    for k in range(1, steps + 1):
        t = k * poll_s
        entry = {"t_s": t, "final": k == steps, "ok": False, "report_s": None}
        cmd = [str(leakscope), "report", "--format", "json", "--until", f"{t:g}s"] + report_extra + [str(rec)]
        started = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=REPORT_TIMEOUT_S)
            entry["report_s"] = round(time.monotonic() - started, 1)
            if r.returncode != 0:
                raise RuntimeError(f"exit {r.returncode}: " + r.stderr.decode(errors="replace").strip()[-300:])
            entry["digest"] = digest(json.loads(r.stdout))
            entry["ok"] = True
        except subprocess.TimeoutExpired:
            entry["error"] = f"timed out after {REPORT_TIMEOUT_S} s"
        except (RuntimeError, ValueError, OSError) as e:
            entry["error"] = str(e).replace("\n", " ")[:300]
        polls.append(entry)
        if entry["ok"]:
            d = entry["digest"]
            log(f"at {t / 60:.2f} min: leak: {fmt_trend(d['leak'])}; step: {fmt_trend(d['step'])}; churn flagged: "
                f"{len(d['churn_flagged'])}/{d['churn_functions']}; USS: {fmt_trend(d['uss'])}")
        else:
            log(f"at {t / 60:.2f} min: report failed: {entry['error']}")
    return polls


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leakscope", default=str(REPO / "target" / "release" / "leakscope"),
                    help="leakscope binary (default: target/release/leakscope in the repository)")
    ap.add_argument("--minutes", type=float, default=30, help="workload run time (default 30)")
    ap.add_argument("--poll", type=float, default=60, help="seconds between report polls (default 60)")
    ap.add_argument("--interval", default="10s", help="leakscope run --interval (default 10s)")
    ap.add_argument("--warmup", default=None,
                    help="passed to `leakscope report --warmup` when leakscope has it (default: not passed)")
    ap.add_argument("--out", default=None, help="work directory (default: a new temporary directory)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--live-only", action="store_true",
                    help="judge from the live polls only (default: after the run, judge the recording "
                         "again as it stood at each poll time, with `leakscope report --until`)")
    ap.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                    help="leakscope's checkpoint interval for the run (LEAKSCOPE_CHECKPOINT_MS); implies "
                         "--live-only. Default: checkpoints off, so that the recording can be judged again")
    ap.add_argument("--evaluate", default=None, metavar="REC",
                    help="do not run anything: judge an existing recording REC at each --poll step "
                         "up to --minutes")
    wl = ap.add_argument_group("workload options (passed through; defaults are the workload's)")
    wl.add_argument("--rate", type=float)
    wl.add_argument("--sites", type=int)
    wl.add_argument("--leak-share", type=float)
    wl.add_argument("--step-every", type=float)
    wl.add_argument("--step-bytes", type=int)
    wl.add_argument("--seed", type=int)
    wl.add_argument("--big", type=int, choices=(0, 1), help="big-block churning sites (default 1)")
    args = ap.parse_args()

    def interrupt(_sig, _frame):
        raise KeyboardInterrupt
    # Ctrl-C, and SIGTERM too, stop the run and still print what was measured (SIGINT's
    # handler is set explicitly: a shell's background job inherits it ignored).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)

    leakscope = Path(args.leakscope).resolve()
    if not leakscope.is_file():
        sys.exit(f"aging_detect: no leakscope at {leakscope} (build it, or pass --leakscope)")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="aging-"))
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    rec = out / "rec"
    n = 1
    while rec.exists() and any(rec.iterdir()):
        rec = out / f"rec.{n}"
        n += 1
    log(f"work dir {out}, recording {rec}")

    # Build the workload.
    binary = out / WORKLOAD_NAME
    cc = os.environ.get("CC", "gcc")
    build = subprocess.run([cc, "-O2", "-g", "-fno-omit-frame-pointer", "-o", str(binary), str(WORKLOAD_C)],
                           capture_output=True, text=True)
    if build.returncode != 0:
        sys.stderr.write(build.stderr)
        sys.exit("aging_detect: building the workload failed")

    # Does this leakscope's report take --warmup?
    report_extra = []
    if args.warmup is not None:
        help_text = subprocess.run([str(leakscope), "report", "--help"], capture_output=True,
                                   text=True).stdout
        if "--warmup" in help_text:
            report_extra = ["--warmup", args.warmup]
        else:
            log("this leakscope's report has no --warmup: not passed")

    if args.evaluate:
        rec = Path(args.evaluate).resolve()
        polls = evaluate(leakscope, rec, args.minutes, args.poll, report_extra)
        workload = workload_lines(rec.parent / "run.stderr")
        res = summarize(polls, [], args, workload, rec, args.minutes * 60, 0, False)
        res["judged"] = "recording as it stood at each step (report --until)"
        print(markdown(res))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        return

    wargs = ["--minutes", f"{args.minutes:g}"]
    for key, opt in PASS_THROUGH.items():
        val = getattr(args, key)
        if val is not None:
            wargs += [opt, f"{val:g}" if isinstance(val, float) else str(val)]
    cmd = [str(leakscope), "run", "-o", str(rec), "--interval", args.interval, "--",
           str(binary)] + wargs
    log("running " + " ".join(cmd))
    run_out = open(out / "run.stdout", "wb")
    run_err = open(out / "run.stderr", "wb")
    t0 = time.monotonic()
    env = dict(os.environ)
    if args.checkpoint_every is not None:
        # Checkpoints give back the stream bytes they cover: the recording cannot be read
        # again as it stood earlier, so only the live polls judge.
        env["LEAKSCOPE_CHECKPOINT_MS"] = str(int(args.checkpoint_every * 1000))
        args.live_only = True
    elif not args.live_only:
        # Keep every byte, so that the recording can be judged again at each poll time.
        env["LEAKSCOPE_CHECKPOINT_MS"] = "0"
    proc = subprocess.Popen(cmd, stdout=run_out, stderr=run_err, cwd=str(out), start_new_session=True,
                            env=env)

    stop = threading.Event()
    sampler = UssSampler(proc.pid, t0, stop)
    sampler.start()

    polls = []
    interrupted = False
    report_cmd = [str(leakscope), "report", "--format", "json"] + report_extra + [str(rec)]

    def poll(final=False):
        t = time.monotonic() - t0
        rec_ = {"t_s": t, "final": final, "ok": False, "report_s": None}
        try:
            r = subprocess.run(report_cmd, capture_output=True, timeout=REPORT_TIMEOUT_S)
            rec_["report_s"] = round(time.monotonic() - t0 - t, 1)
            if r.returncode != 0:
                raise RuntimeError(f"exit {r.returncode}: "
                                   + r.stderr.decode(errors="replace").strip()[-300:])
            rec_["digest"] = digest(json.loads(r.stdout))
            rec_["recording_bytes"] = du_bytes(rec)
            rec_["ok"] = True
        except subprocess.TimeoutExpired:
            rec_["report_s"] = REPORT_TIMEOUT_S
            rec_["error"] = f"timed out after {REPORT_TIMEOUT_S} s"
        except (RuntimeError, ValueError, OSError) as e:
            rec_["report_s"] = rec_["report_s"] or round(time.monotonic() - t0 - t, 1)
            rec_["error"] = str(e).replace("\n", " ")[:300]
        polls.append(rec_)
        if rec_["ok"]:
            d = rec_["digest"]
            if not (d["has_site_trend_field"] or d["has_aging"]):
                trend_txt = "no trend in report"
            else:
                trend_txt = (f"leak: {fmt_trend(d['leak'])}; step: {fmt_trend(d['step'])}; churn flagged: "
                             f"{len(d['churn_flagged'])}/{d['churn_functions']}; USS: {fmt_trend(d['uss'])}")
            log(f"poll {t / 60:.2f} min{' (final)' if final else ''} ({rec_['report_s']} s): "
                f"{d['workload_sites']} workload sites ({d['churn_functions']} churn functions, "
                f"{d['leak_sites']} leak, {d['step_sites']} step); {trend_txt}")
        else:
            log(f"poll {t / 60:.2f} min failed: {rec_['error']}")

    run_rc = None
    try:
        next_t = args.poll
        while True:
            wait = next_t - (time.monotonic() - t0)
            try:
                run_rc = proc.wait(timeout=max(wait, 0.01))
                break
            except subprocess.TimeoutExpired:
                pass
            poll()
            now = time.monotonic() - t0
            next_t += args.poll
            if next_t <= now:  # a slow report: skip the polls it overran
                next_t = (int(now // args.poll) + 1) * args.poll
        run_elapsed = time.monotonic() - t0
        log(f"leakscope run exited with {run_rc} after {run_elapsed / 60:.2f} min")
        poll(final=True)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping the workload")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            run_rc = proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            run_rc = proc.wait()
        run_elapsed = time.monotonic() - t0
    finally:
        stop.set()
        run_out.close()
        run_err.close()
    sampler.join(timeout=10)

    workload = workload_lines(out / "run.stderr")
    live = summarize(polls, sampler.samples, args, workload, rec, run_elapsed, run_rc, interrupted)
    if args.live_only or interrupted:
        res = live
        res["judged"] = "live polls"
    else:
        log("judging the recording again as it stood at each poll time (report --until)")
        judged = evaluate(leakscope, rec, run_elapsed / 60, args.poll, report_extra)
        res = summarize(judged, sampler.samples, args, workload, rec, run_elapsed, run_rc, interrupted)
        res["judged"] = "recording as it stood at each poll time (report --until)"
        res["collector_rss_kb"] = sampler.collector
        res["live_polls"] = {k: live.get(k) for k in (
            "leak_flagged_min", "step_flagged_min", "uss_flagged_min", "churn_flagged_max_per_poll",
            "churn_flagged_distinct", "polls", "polls_ok")}
    res["command"] = cmd
    res["work_dir"] = str(out)
    res["workload_pid"] = sampler.pid
    print(markdown(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        log(f"results written to {args.json}")
    if interrupted:
        sys.exit(130)
    if run_rc != 0:
        log(f"leakscope run failed (exit {run_rc}); its stderr: {out / 'run.stderr'}")
        sys.exit(1)


if __name__ == "__main__":
    main()
