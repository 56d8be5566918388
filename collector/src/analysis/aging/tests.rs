//! The aging analysis on a simulated 216-hour run (the length of the published study) at
//! the default 10 s interval: the series stay bounded, a small steady leak and a daily step
//! are found with their rates and shapes, and stationary churn is not flagged.

use crate::analysis::aging::AgingOptions;
use crate::analysis::model::Site;
use crate::analysis::{analyze, AnalysisOptions};
use crate::ingest::meta::RecordingMeta;
use crate::state::{ConnId, RunState, SeriesLimits, StateOptions, DEFAULT_BUCKETS};
use crate::test_records::{alloc, free, Rng};
use leakscope_protocol::{
    Hello, MemoryKind, Origin, Pid, Record, RuntimeAddr, StackDef, StackId, Timestamp,
};

const S: u64 = 1_000_000_000;
const INTERVAL: u64 = 10 * S;
const HOURS: u64 = 216;
const CHURN_SITES: u32 = 20;
const LEAK_STACK: u32 = 100;
const STEP_STACK: u32 = 101;
/// The leak: 1,000 bytes a minute.
const LEAK_PER_HOUR: f64 = 60_000.0;

/// A run state on a grid of `interval_ns`, with one process (pid 7, started at 0) that
/// has defined `stacks` (stack `id` has the single frame `0x1000 + id`), on connection 0.
pub(super) fn one_process(interval_ns: u64, stacks: impl IntoIterator<Item = u32>) -> RunState {
    let mut state = RunState::new(StateOptions {
        series: SeriesLimits {
            interval_ns,
            buckets: DEFAULT_BUCKETS,
        },
        ..StateOptions::default()
    });
    let c = ConnId(0);
    state.apply(
        c,
        Record::Hello(Hello {
            pid: Pid(7),
            ppid: Pid(1),
            origin: Origin::Exec,
            exe: "/srv/app".into(),
            argv: vec!["app".into()],
            start: Timestamp(0),
            start_unix_ns: 0,
            fingerprint: leakscope_protocol::BUILD_FINGERPRINT,
        }),
    );
    for id in stacks {
        state.apply(
            c,
            Record::Stack(StackDef {
                id: StackId(id),
                frames: vec![RuntimeAddr(0x1000 + u64::from(id))],
                python: vec![],
            }),
        );
    }
    state
}

/// The site of `model`'s first process whose frame is stack `id`'s.
pub(super) fn site_of(model: &crate::analysis::model::ReportModel, id: u32) -> &Site {
    let address = format!("0x{:x}", 0x1000 + id);
    model.processes[0]
        .sites
        .iter()
        .find(|s| s.frames.first().is_some_and(|f| *f.address == *address))
        .unwrap_or_else(|| panic!("no site for stack {id}"))
}

/// A 216-hour stream: each churning site replaces one of its 8 blocks (random size) every
/// interval; the leak site keeps 1,000 bytes a minute; the step site keeps 64 MiB a day.
fn simulated_run() -> RunState {
    let mut state = one_process(INTERVAL, (1..=CHURN_SITES).chain([LEAK_STACK, STEP_STACK]));
    let c = ConnId(0);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next();
    let block = |site: u32, slot: u64| 0x1000_0000 + u64::from(site) * 0x1000 + slot * 0x10;
    for site in 1..=CHURN_SITES {
        for slot in 0..8 {
            state.apply(c, alloc(1, block(site, slot), 64 + next() % 4096, site));
        }
    }
    let ticks = HOURS * 3600 * S / INTERVAL;
    let mut leaked = 0u64;
    for tick in 1..=ticks {
        let ts = tick * INTERVAL + 5 * S;
        for site in 1..=CHURN_SITES {
            let slot = next() % 8;
            state.apply(c, free(ts, block(site, slot)));
            state.apply(
                c,
                alloc(ts + 1, block(site, slot), 64 + next() % 4096, site),
            );
        }
        if tick % 6 == 0 {
            state.apply(
                c,
                alloc(ts + 2, 0x9000_0000_0000 + leaked * 0x1000, 1000, LEAK_STACK),
            );
            leaked += 1;
        }
        if tick % (24 * 360) == 0 {
            let day = tick / (24 * 360);
            state.apply(
                c,
                alloc(
                    ts + 3,
                    0xa000_0000_0000 + day * (1 << 28),
                    64 << 20,
                    STEP_STACK,
                ),
            );
        }
    }
    state.finish();
    state
}

#[test]
fn a_216_hour_run_stays_bounded_and_finds_the_leak_and_the_steps() {
    let state = simulated_run();
    let process = &state.processes[0];
    let grid = process.aging.grid();
    let (series, runs) = process.aging.size();
    // Outstanding bytes of every site, outlived bytes of the churning ones.
    assert_eq!(series, 2 * CHURN_SITES as usize + 2);
    // Bounded: every series spans at most the limit (plus the open bucket), whatever the
    // length of the run, and constant stretches cost one run each.
    assert!(grid.ticks >= HOURS * 360 - 1, "{grid:?}");
    assert!(runs <= series * (DEFAULT_BUCKETS + 1), "{runs} runs");
    for id in (1..=CHURN_SITES).chain([LEAK_STACK, STEP_STACK]) {
        let key = crate::state::SiteKey::host(StackId(id), MemoryKind::Host);
        let values = process.aging.get(&key).expect("a series").values();
        assert!(
            values.len() <= DEFAULT_BUCKETS + 1,
            "{} values",
            values.len()
        );
        assert!(
            values.len() > DEFAULT_BUCKETS / 2,
            "{} values",
            values.len()
        );
    }
    assert!(grid.bucket_ns() >= HOURS * 3600 * S / DEFAULT_BUCKETS as u64);

    let model = analyze(
        &state,
        &RecordingMeta::default(),
        &AnalysisOptions {
            aging: AgingOptions {
                warmup_ns: 3600 * S,
                ..AgingOptions::default()
            },
            ..AnalysisOptions::default()
        },
    );
    let by_stack = |id: u32| site_of(&model, id);
    let leak = by_stack(LEAK_STACK)
        .aging
        .trend
        .expect("the leak was tested");
    assert!(leak.significant, "{leak:?}");
    assert!(
        (leak.slope_bytes_per_hour - LEAK_PER_HOUR).abs() < 0.02 * LEAK_PER_HOUR,
        "{leak:?}"
    );
    assert!(leak.ci_low <= LEAK_PER_HOUR * 1.01 && leak.ci_high >= LEAK_PER_HOUR * 0.99);
    assert_eq!(leak.shape, crate::analysis::trend::shape::Shape::Drift);
    let steps = by_stack(STEP_STACK)
        .aging
        .trend
        .expect("the steps were tested");
    assert!(steps.significant, "{steps:?}");
    assert_eq!(steps.shape, crate::analysis::trend::shape::Shape::Steps);
    for id in 1..=CHURN_SITES {
        let t = by_stack(id).aging.trend.expect("churn was tested");
        assert!(!t.significant, "stack {id}: {t:?}");
    }
    let aging = model.aging.as_ref().expect("the run's aging section");
    // The two sites, the process's host memory, its malloc pool and the run's host memory.
    assert_eq!(aging.significant, 5, "{aging:?}");
}

/// A slowly mean-reverting level (a stationary site with slow turnover): an AR(1) series
/// with coefficient 0.97 around a constant, sampled 30 times.
fn wandering(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 2001) as f64 / 1000.0 - 1.0
    };
    let mut level = 0.0f64;
    (0..n)
        .map(|_| {
            level = 0.97 * level + 1_000.0 * next();
            130_000.0 + level
        })
        .collect()
}

#[test]
fn a_churn_band_keeps_slow_wanderers_from_being_growth() {
    use super::{material, stat, MATERIAL_NOISE_UNITS};
    // Some of these wanders pass the test itself on 30 points; none leaves a band of
    // 8 KiB (256 live blocks of 512 bytes).
    let band = 256f64.sqrt() * 512.0;
    let mut passed_test = 0;
    for seed in 1..200u64 {
        let x = wandering(seed * 7919, 30);
        let s = stat(&x, band, 0.01).expect("tested");
        if s.p < 0.01 && s.ci_low > 0.0 {
            passed_test += 1;
        }
        assert!(!s.material, "seed {seed}: {s:?}");
    }
    assert!(
        passed_test > 0,
        "the wanders should fool the test alone sometimes"
    );
    // A leak of 300 bytes a step over 30 steps (9 KB) in a 1 KiB band is material;
    // without a band, the residual noise decides.
    let leak: Vec<f64> = (0..30)
        .map(|i| 20_000.0 + 300.0 * i as f64 + ((i * 37) % 11) as f64 * 50.0)
        .collect();
    let s = stat(&leak, 1_024.0, 0.01).unwrap();
    assert!(s.material && s.ci_low > 0.0, "{s:?}");
    assert!(!material(
        &leak,
        300.0,
        300.0,
        9_000.0 / (MATERIAL_NOISE_UNITS * 0.9)
    ));
}

#[test]
fn the_churn_band_is_zero_for_sites_that_never_free() {
    use super::churn_band;
    use crate::analysis::model::{Memory, Site};
    let mut site = Site {
        memory: Memory::Host,
        pool: "malloc".into(),
        device: None,
        space: None,
        owned: true,
        during_capture: false,
        outstanding_bytes: 4 << 20,
        outstanding_count: 4,
        allocations: 4,
        allocated_bytes: 4 << 20,
        peak_bytes: 4 << 20,
        temporary: 0,
        frames: vec![],
        aging: Default::default(),
        history: Default::default(),
    };
    assert_eq!(
        churn_band(&site),
        0.0,
        "steps of a site that keeps everything"
    );
    site.allocations = 104;
    site.allocated_bytes = 104 << 20;
    assert!((churn_band(&site) - 2.0 * f64::from(1u32 << 20)).abs() < 1.0);
}

#[test]
fn processes_are_summed_on_the_coarser_grid() {
    use super::add_grids;
    use super::series::OnGrid;
    use crate::state::Grid;
    let grid = |level: u32, first_tick: u64| Grid {
        interval_ns: 10,
        level,
        start_bucket: first_tick >> level,
        first_tick: Some(first_tick),
        ticks: 0,
    };
    // A process at level 0 from tick 4 (values 1..=8), another at level 1 from tick 6.
    let a = OnGrid {
        start: 4,
        values: (1..=8).collect(),
    };
    let b = OnGrid {
        start: 3,
        values: vec![100, 100, 100],
    };
    let (g, sum) = add_grids(grid(0, 4), a, grid(1, 6), b);
    assert_eq!(g.level, 1);
    assert_eq!(g.first_tick, Some(4));
    // a at level 1: buckets 2..=5 hold the means of (1,2) (3,4) (5,6) (7,8).
    assert_eq!(sum.start, 2);
    assert_eq!(sum.values, vec![1, 103, 105, 107]);
}
