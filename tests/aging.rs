//! Aging analysis end to end: `tests/scenarios/aging.c` runs for a few seconds with a site
//! that leaks a share of what it allocates from the same call as its frees (steady drift),
//! a site that grows in four 1 MiB steps, a start-up allocation that stays, and eight
//! stationary churning sites. Recorded at `--interval 100ms`, the report must flag the
//! drift (with the planted rate inside its slope's interval's neighbourhood) and the steps,
//! each with its shape, and nothing else; the settings, the series and the time to
//! exhaustion must come through in JSON; the options must change what is tested; and
//! `report --until` must show the recording as it stood earlier.

mod common;

use common::*;
use serde_json::Value;

/// Seconds the scenario runs.
const SECONDS: &str = "6";

/// The site whose innermost frame is `function`, holding the most.
fn site<'a>(process: &'a Value, function: &str) -> &'a Value {
    process["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .filter(|s| s["frames"][0]["function"] == function)
        .max_by_key(|s| s["outstanding_bytes"].as_u64())
        .unwrap_or_else(|| panic!("no site in {function}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn growing_sites_are_flagged_with_rate_and_shape() {
    let work = Work::new("aging");
    let prog = gcc(&work, &[&scenario("aging.c")], "aging", &[]);
    let dir = work.join("rec");
    let mut cmd = leakscope_cmd();
    cmd.arg("run")
        .arg("--out")
        .arg(&dir)
        .args([
            "--interval",
            "100ms",
            "--warmup",
            "500ms",
            "--format",
            "json",
        ])
        .args(["--series", "--"])
        .arg(&prog)
        .arg(SECONDS);
    let out = run_cmd(&mut cmd);
    assert_code(&out, 0, "leakscope run aging");
    let planted: f64 = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("leak_bytes_per_hour "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the planted rate");
    let report = run_report_json(&out.stderr);
    let p = &report["processes"][0];

    // The drift: the planted rate, a positive interval, significant, `drift`.
    let drift = &site(p, "leak_drift")["trend"];
    assert_eq!(drift["significant"], true, "{drift:#}");
    assert_eq!(drift["shape"], "drift", "{drift:#}");
    let slope = f(&drift["slope_bytes_per_hour"]);
    assert!(
        (slope - planted).abs() <= 0.1 * planted,
        "slope {slope} vs planted {planted}: {drift:#}"
    );
    assert!(f(&drift["ci_low"]) > 0.0 && f(&drift["ci_low"]) <= slope);
    assert!(f(&drift["ci_high"]) >= slope);
    assert!(f(&drift["p_value"]) < 0.01);

    // The steps.
    let steps = &site(p, "grow_steps")["trend"];
    assert_eq!(steps["significant"], true, "{steps:#}");
    assert_eq!(steps["shape"], "steps", "{steps:#}");

    // Start-up memory that stays: tested, flat.
    let startup = &site(p, "startup_table")["trend"];
    assert_eq!(startup["significant"], false, "{startup:#}");
    assert_eq!(startup["shape"], "flat");
    assert_eq!(f(&startup["slope_bytes_per_hour"]), 0.0);

    // No false verdict: nothing else grows, the stationary churn least of all.
    for s in p["sites"].as_array().unwrap() {
        let function = s["frames"][0]["function"].as_str().unwrap_or("?");
        if s["trend"]["significant"] == true {
            assert!(
                function == "leak_drift" || function == "grow_steps",
                "false growth verdict on {function}: {:#}",
                s["trend"]
            );
        }
    }
    for n in 0..8 {
        let churn = &site(p, &format!("churn_{n}"))["trend"];
        assert!(churn.is_object(), "churn_{n} was not tested");
        assert_eq!(churn["significant"], false, "churn_{n}: {churn:#}");
    }

    // The series come with `--series`, one value per tested point.
    let aging = &p["aging"];
    let points = aging["points"].as_u64().expect("points") as usize;
    assert!(points >= 40, "{aging:#}");
    let values = site(p, "leak_drift")["series"]["values"]
        .as_array()
        .expect("series values");
    assert_eq!(values.len(), points);
    assert!((f(&site(p, "leak_drift")["series"]["step_s"]) - 0.1).abs() < 1e-9);
    assert!(f(&values[values.len() - 1]) > f(&values[0]));

    // The process's own host memory and its pool grow; the black box has too few minutes.
    assert_eq!(aging["host"]["trend"]["significant"], true, "{aging:#}");
    let malloc = aging["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["pool"] == "malloc")
        .expect("the malloc pool");
    assert_eq!(malloc["trend"]["significant"], true);
    assert!(
        aging["uss"]["latest_bytes"].as_u64().unwrap() > 0,
        "{aging:#}"
    );
    assert_eq!(
        aging["uss"]["trend"],
        Value::Null,
        "under a minute of readings"
    );

    // The run: settings, counts, the machine and when the host runs out.
    let run = &report["aging"];
    assert_eq!(f(&run["alpha"]), 0.01);
    assert_eq!(f(&run["q"]), 0.1);
    assert_eq!(f(&run["warmup_s"]), 0.5);
    assert!(run["tests"].as_u64().unwrap() >= 12, "{run:#}");
    assert!(run["significant"].as_u64().unwrap() >= 2, "{run:#}");
    let machine = &run["machine"];
    let total = machine["mem_total"].as_u64().expect("mem_total");
    assert!(total > 0 && machine["mem_available"].as_u64().unwrap() <= total);
    let host = run["exhaustion"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["memory"] == "host_available")
        .expect("host exhaustion");
    let used = &run["host_used"];
    assert!(used["latest_bytes"].as_u64().unwrap() > 0, "{run:#}");
    assert_eq!(
        used["trend"],
        Value::Null,
        "under a minute of machine readings"
    );
    assert!(run["gpus_used"].is_array());
    let hours = f(&host["hours"]);
    assert!(hours > 0.0 && hours.is_finite(), "{host:#}");
    assert!(f(&host["hours_low"]) <= hours, "{host:#}");
    let expected = host["headroom_bytes"].as_u64().unwrap() as f64
        / f(&run["host"]["trend"]["slope_bytes_per_hour"]);
    assert!((hours - expected).abs() <= 1e-6 * expected, "{host:#}");

    // The same recording with other settings: the options reach the analysis.
    let strict = report_json_with(
        &dir,
        &["--alpha", "0.001", "--fdr", "0.05", "--warmup", "0s"],
    );
    assert_eq!(f(&strict["aging"]["alpha"]), 0.001);
    assert_eq!(f(&strict["aging"]["q"]), 0.05);
    assert_eq!(strict["processes"][0]["sites"][0].get("series"), None);
    assert_eq!(
        site(&strict["processes"][0], "leak_drift")["trend"]["significant"],
        true
    );
    // The recording as it stood 3 s in: fewer values, less held, the same verdict on the
    // drift (it was already clear then); the whole of it with a later cut.
    let early = report_json_with(&dir, &["--until", "3s", "--warmup", "500ms"]);
    let ep = &early["processes"][0];
    assert_eq!(ep["stream"], "open", "cut while running");
    let early_points = ep["aging"]["points"].as_u64().unwrap() as usize;
    assert!(
        early_points < points && early_points >= 20,
        "{early_points} vs {points}"
    );
    assert!(
        site(ep, "leak_drift")["outstanding_bytes"].as_u64()
            < site(p, "leak_drift")["outstanding_bytes"].as_u64()
    );
    assert_eq!(site(ep, "leak_drift")["trend"]["significant"], true);
    let all = report_json_with(&dir, &["--until", "1h", "--warmup", "500ms"]);
    assert_eq!(all["processes"][0]["aging"]["points"], aging["points"]);
    assert_eq!(
        site(&all["processes"][0], "leak_drift")["outstanding_bytes"],
        site(p, "leak_drift")["outstanding_bytes"]
    );
    let late = report_json_with(&dir, &["--warmup", "10m"]);
    assert_eq!(
        site(&late["processes"][0], "leak_drift")["trend"],
        Value::Null
    );
    assert_eq!(late["aging"]["tests"], 0);
}

#[test]
fn text_report_lists_growth_and_options_are_checked() {
    let work = Work::new("aging-text");
    let prog = gcc(&work, &[&scenario("aging.c")], "aging", &[]);
    let dir = work.join("rec");
    let mut cmd = leakscope_cmd();
    cmd.arg("run")
        .arg("--out")
        .arg(&dir)
        .args(["--interval", "100ms", "--warmup", "500ms", "--"])
        .arg(&prog)
        .arg("3");
    let out = run_cmd(&mut cmd);
    assert_code(&out, 0, "leakscope run aging");
    let err = text(&out.stderr);
    assert!(err.contains("growth tests: "), "{err}");
    assert!(err.contains("growth over time ("), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("at leak_drift"))
        .unwrap_or_else(|| panic!("no growing leak_drift line:\n{err}"));
    assert!(line.contains("/h") && line.contains("drift"), "{line}");
    assert!(err.contains("host MemAvailable ("), "{err}");

    for (option, value, complaint) in [
        ("--alpha", "2", "probability"),
        ("--fdr", "0", "probability"),
        ("--warmup", "soon", "duration"),
    ] {
        let mut cmd = leakscope_cmd();
        cmd.arg("report").args([option, value]).arg(&dir);
        let out = run_cmd(&mut cmd);
        assert_code(&out, 2, "a bad option");
        let err = text(&out.stderr);
        assert!(err.contains(complaint) && err.contains(value), "{err}");
    }
}
