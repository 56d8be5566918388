//! Checks the trend statistics against peer implementations run through `python3`:
//! pymannkendall (`original_test`, `hamed_rao_modification_test`), scipy
//! (`stats.theilslopes` for the rounded slope interval, `stats.false_discovery_control`
//! for Benjamini–Hochberg, `stats.norm.sf` for the normal tail). Without pymannkendall the
//! test skips, unless `LEAKSCOPE_REQUIRE_PYMANNKENDALL=1`, when it fails.

use super::sen::{CiRule, PairwiseSlopes};
use super::{fdr, mann_kendall, normal, sen};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"
import json, sys
import numpy as np
import pymannkendall as mk
from scipy import stats
inp = json.load(sys.stdin)
def num(v):
    v = float(v)
    return None if np.isnan(v) else v
out = {"series": [], "bh": [], "sf": []}
for x in inp["series"]:
    x = np.asarray(x, dtype=float)
    o = mk.original_test(x, alpha=0.05)
    h05 = mk.hamed_rao_modification_test(x, alpha=0.05)
    h01 = mk.hamed_rao_modification_test(x, alpha=0.01)
    h3 = mk.hamed_rao_modification_test(x, alpha=0.05, lag=3) if len(x) >= 4 else None
    ts = stats.theilslopes(x, np.arange(len(x), dtype=float), 0.95)
    pack = lambda r: {k: num(getattr(r, k)) for k in ("s", "var_s", "z", "p", "slope", "intercept")}
    out["series"].append({"original": pack(o), "hr05": pack(h05), "hr01": pack(h01), "hr_lag3": pack(h3) if h3 else {},
                          "ci": [num(ts.low_slope), num(ts.high_slope)]})
for (p, q) in inp["bh"]:
    adj = stats.false_discovery_control(np.asarray(p, dtype=float), method="bh") if len(p) else []
    out["bh"].append([bool(a <= q) for a in adj])
out["sf"] = [float(stats.norm.sf(z)) for z in inp["z"]]
out["ppf"] = [float(stats.norm.ppf(1 - a / 2)) for a in inp["alpha"]]
json.dump(out, sys.stdout)
"#;

const ALPHAS: [f64; 5] = [0.1, 0.05, 0.01, 0.001, 1e-8];

/// splitmix64: a seeded generator, so the series are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal by Box–Muller.
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn series() -> Vec<Vec<f64>> {
    let mut rng = Rng(0x1EA4_5C09E);
    let mut all = Vec::new();
    let lengths = [
        3usize, 4, 5, 7, 10, 13, 20, 31, 50, 77, 100, 150, 240, 360, 500,
    ];
    for (k, &n) in lengths.iter().enumerate() {
        // Noise.
        all.push((0..n).map(|_| rng.normal()).collect());
        // Random walk.
        let mut w = 0.0;
        all.push(
            (0..n)
                .map(|_| {
                    w += rng.normal();
                    w
                })
                .collect(),
        );
        // Linear drift plus noise, of either sign.
        let b = if k % 2 == 0 { 0.05 } else { -0.2 };
        all.push((0..n).map(|i| b * i as f64 + rng.normal()).collect());
        // AR(1), for Hamed–Rao.
        let phi = [0.3, 0.6, 0.9][k % 3];
        let mut a = 0.0;
        all.push(
            (0..n)
                .map(|i| {
                    a = phi * a + rng.normal();
                    a + 0.01 * i as f64
                })
                .collect(),
        );
        if n >= 10 {
            // A step, and integer byte counts with many ties.
            all.push(
                (0..n)
                    .map(|i| if i < n / 2 { 0.0 } else { 3.0 } + 0.5 * rng.normal())
                    .collect(),
            );
            all.push(
                (0..n)
                    .map(|i| (4096 * (rng.below(4) + i as u64 / 7)) as f64)
                    .collect(),
            );
        }
    }
    all.push(vec![5.0; 12]);
    all.push((0..40).map(f64::from).collect());
    all.push((0..40).map(|i| f64::from(i % 2)).collect());
    all
}

fn python_has_pymannkendall() -> bool {
    Command::new("python3")
        .args(["-c", "import pymannkendall, scipy.stats"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_reference(input: &Value) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reference script failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(ours: f64, theirs: &Value, rel: f64, abs: f64, what: &str) {
    let Some(theirs) = theirs.as_f64() else {
        return; // pymannkendall's NaN (undefined there): nothing to compare.
    };
    let tol = abs.max(rel * theirs.abs());
    assert!(
        (ours - theirs).abs() <= tol,
        "{what}: ours {ours}, reference {theirs}"
    );
}

fn check(m: &mann_kendall::MannKendall, s: &sen::SenSlope, r: &Value, what: &str) {
    if r["var_s"].is_null() || r["z"].is_null() {
        return;
    }
    assert_eq!(m.s as f64, r["s"].as_f64().unwrap(), "{what}: S");
    close(m.var_s, &r["var_s"], 1e-9, 1e-9, &format!("{what}: var_s"));
    close(m.z, &r["z"], 1e-9, 1e-9, &format!("{what}: z"));
    close(m.p, &r["p"], 0.0, 1e-9, &format!("{what}: p"));
    close(s.slope, &r["slope"], 1e-9, 1e-12, &format!("{what}: slope"));
    close(
        s.intercept,
        &r["intercept"],
        1e-9,
        1e-12,
        &format!("{what}: intercept"),
    );
}

#[test]
fn agrees_with_pymannkendall_and_scipy() {
    if !python_has_pymannkendall() {
        let required = std::env::var("LEAKSCOPE_REQUIRE_PYMANNKENDALL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "LEAKSCOPE_REQUIRE_PYMANNKENDALL=1 but python3 cannot import pymannkendall and scipy"
        );
        eprintln!("skipped: python3 lacks pymannkendall (pip install pymannkendall)");
        return;
    }
    let all = series();
    let mut rng = Rng(42);
    let bh: Vec<(Vec<f64>, f64)> = vec![
        (vec![], 0.1),
        (vec![0.01, 0.01, 0.2, 0.03, 0.04], 0.1),
        ((0..200).map(|_| rng.uniform().powi(3)).collect(), 0.1),
        (
            (0..50).map(|_| (rng.below(20) as f64) / 400.0).collect(),
            0.05,
        ),
    ];
    let z: Vec<f64> = (0..=80)
        .map(|i| f64::from(i) * 0.1)
        .chain([10.0, 15.0, 25.0, 37.0])
        .collect();
    let reference = run_reference(&json!({ "series": all, "bh": bh, "z": z, "alpha": ALPHAS }));

    for (i, x) in all.iter().enumerate() {
        let r = &reference["series"][i];
        let s = sen::sens_slope(x);
        check(
            &mann_kendall::original_test(x, 0.05),
            &s,
            &r["original"],
            &format!("#{i} original"),
        );
        check(
            &mann_kendall::hamed_rao_test(x, 0.05, None),
            &s,
            &r["hr05"],
            &format!("#{i} hamed-rao α=0.05"),
        );
        check(
            &mann_kendall::hamed_rao_test(x, 0.01, None),
            &s,
            &r["hr01"],
            &format!("#{i} hamed-rao α=0.01"),
        );
        check(
            &mann_kendall::hamed_rao_test(x, 0.05, Some(3)),
            &s,
            &r["hr_lag3"],
            &format!("#{i} hamed-rao lag 3"),
        );
        let var = mann_kendall::variance(x);
        let ci = PairwiseSlopes::new(x)
            .interval(var, 0.05, CiRule::Rounded)
            .unwrap();
        close(ci.0, &r["ci"][0], 1e-12, 1e-12, &format!("#{i} ci low"));
        close(ci.1, &r["ci"][1], 1e-12, 1e-12, &format!("#{i} ci high"));
    }
    for (k, (p, q)) in bh.iter().enumerate() {
        let theirs: Vec<bool> = reference["bh"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        assert_eq!(fdr::benjamini_hochberg(p, *q), theirs, "BH family {k}");
    }
    for (k, &zk) in z.iter().enumerate() {
        let theirs = reference["sf"][k].as_f64().unwrap();
        let ours = normal::upper_tail(zk);
        assert!(
            (ours - theirs).abs() <= 1e-12 * theirs,
            "sf({zk}): ours {ours}, scipy {theirs}"
        );
    }
    for (k, &a) in ALPHAS.iter().enumerate() {
        let theirs = reference["ppf"][k].as_f64().unwrap();
        let ours = normal::quantile(1.0 - a / 2.0);
        assert!(
            (ours - theirs).abs() <= 1e-12 * theirs,
            "ppf(1-{a}/2): ours {ours}, scipy {theirs}"
        );
    }
}
