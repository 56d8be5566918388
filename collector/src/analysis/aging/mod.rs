//! The aging analysis: which sites, pools and processes grow over time, how fast, how sure,
//! and when memory runs out at those rates.
//!
//! Every series of the run is tested after its process's warm-up:
//! - each site's outstanding bytes, and, for a site that has freed many blocks, its
//!   outlived bytes (blocks far older than any it freed: the state's
//!   `outlived.rs`), where a leak hidden in churn shows without the churn;
//! - each process's own host memory, and its GPU memory per device;
//! - each pool (owned sites summed by pool, memory kind and device);
//! - the black-box view: the process's USS and RSS as medians of 60-second windows, as
//!   the published study tested them;
//! - the whole run's host memory (every process summed);
//! - the machine's host memory in use and each GPU's used memory (60-second medians of
//!   `leakscope run`'s readings).
//!
//! The tests ([`crate::analysis::trend`]) run on all of them at once, so that
//! Benjamini–Hochberg controls the false discoveries across the run. A growth is
//! significant when the Hamed–Rao Mann–Kendall p-value is below α, the Theil–Sen slope's
//! (1 − α) interval lies above zero, Benjamini–Hochberg rejects at q, and the growth is
//! material: at the interval's lower end it has added at least three units of the series's
//! own noise over the span tested (`material`). An outlived series must moreover grow as a
//! `drift`: growth in a few steps there is memory kept in bursts passing the age bar
//! together, not a leak (the outstanding bytes judge it). A site grows when either of its
//! series does; its trend then describes that series (`basis`).
//!
//! - [`series`]: the values to test (grid, warm-up cut, sums, window medians).
//! - [`exhaustion`]: time until host memory and each GPU run out.
//! - [`machine`]: the machine's black-box series (host memory in use, each GPU's used
//!   memory).

pub mod exhaustion;
pub mod machine;
pub mod series;

use crate::analysis::aging_model::{
    Basis, DeviceAging, MachineAging, PoolAging, ProcessAging, ResidentAging, RunAging,
    SeriesReport, Tested, TrendReport,
};
use crate::analysis::model::{Memory, ProcessReport};
use crate::analysis::trend::shape::Shape;
use crate::analysis::trend::{self, fdr, sen, shape, TrendOptions};
use crate::state::{Grid, RunState};
use series::{window_medians, OnGrid, Prepared};
use std::collections::BTreeMap;

/// Fewest values (after the warm-up) a series needs to be tested.
pub const MIN_POINTS: usize = 10;

/// Noise units a growth must add, at its interval's lower end, to be material.
pub const MATERIAL_NOISE_UNITS: f64 = 3.0;

/// Fewest blocks a site must have freed for its outlived bytes to be tested: its longest
/// hold is then the largest of that many lifetimes, a fair bound on how long its blocks
/// live. (A ratio of frees to live blocks would shut out the leaks that keep a large share
/// of what they allocate: their live blocks are mostly the leak.)
pub const OUTLIVED_MIN_FREES: u64 = 100;

/// Window of the black-box method's medians.
pub const RESIDENT_WINDOW_NS: u64 = 60_000_000_000;

const NS_PER_HOUR: f64 = 3_600e9;

/// Settings of the aging analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgingOptions {
    pub trend: TrendOptions,
    /// Nanoseconds at the start of each process left out of the tests.
    pub warmup_ns: u64,
    /// Add each tested series's values to the report.
    pub series: bool,
}

impl Default for AgingOptions {
    fn default() -> Self {
        AgingOptions {
            trend: TrendOptions::default(),
            warmup_ns: 60_000_000_000,
            series: false,
        }
    }
}

/// What a tested series belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Site(usize, usize),
    /// A site's outlived bytes.
    Outlived(usize, usize),
    Host(usize),
    Device(usize, usize),
    Pool(usize, usize),
    Uss(usize),
    Rss(usize),
    RunHost,
    RunDevice(usize),
    Machine(usize),
}

/// One series to test.
struct Candidate {
    target: Target,
    prepared: Prepared,
    /// When its process started (the run's first process for the run's series), on the
    /// monotonic clock: series times are given from there.
    origin_ns: u64,
    /// The least noise unit to assume (a site's churn band, [`churn_band`]; 0 otherwise).
    band: f64,
}

/// The statistics of one series before the run-wide decision.
#[derive(Clone, Copy, Debug)]
struct Stat {
    slope: f64,
    ci_low: f64,
    ci_high: f64,
    p: f64,
    /// The growth at the interval's lower end, over the series's span, is at least
    /// [`MATERIAL_NOISE_UNITS`] units of the series's own noise (see [`material`]).
    material: bool,
    /// Every value is the same (not counted as a test).
    constant: bool,
}

/// Tests every series of the run, writes each verdict into `reports` (sites and the
/// processes' `aging` sections, in `state`'s process order) and returns the run's section.
pub fn analyze_run(
    state: &RunState,
    reports: &mut [ProcessReport],
    opts: &AgingOptions,
) -> RunAging {
    let mut candidates = Vec::new();
    let mut run_host: Option<(Grid, OnGrid)> = None;
    let mut run_devices: BTreeMap<u32, (Grid, OnGrid)> = BTreeMap::new();
    let mut run_warmup_end = u64::MAX;
    let mut run_start = u64::MAX;
    for (pi, (process, report)) in state.processes.iter().zip(reports.iter_mut()).enumerate() {
        let grid = process.aging.grid();
        let start = process.hello.start.0;
        let warmup_end = start.saturating_add(opts.warmup_ns);
        run_warmup_end = run_warmup_end.min(warmup_end);
        run_start = run_start.min(start);
        let mut host = OnGrid::default();
        let mut devices: BTreeMap<Option<u32>, OnGrid> = BTreeMap::new();
        let mut pools: BTreeMap<(String, Memory, Option<u32>), (u64, OnGrid)> = BTreeMap::new();
        for (si, site) in report.sites.iter().enumerate() {
            candidates.push(Candidate {
                target: Target::Site(pi, si),
                prepared: site.history.outstanding.after(&grid, warmup_end),
                origin_ns: start,
                band: churn_band(site),
            });
            if let Some(outlived) = site.history.outlived.as_ref().filter(|_| turned_over(site)) {
                // From its first non-zero value: the zeros before it are the age bar's
                // delay (no block can be outlived until it has lived past the bar).
                candidates.push(Candidate {
                    target: Target::Outlived(pi, si),
                    prepared: outlived.after(&grid, warmup_end).from_first_nonzero(),
                    origin_ns: start,
                    band: 0.0,
                });
            }
            if !site.owned {
                continue;
            }
            if site.space.is_some() {
                devices
                    .entry(site.device)
                    .or_default()
                    .add(&site.history.outstanding);
            } else {
                host.add(&site.history.outstanding);
            }
            let pool = pools
                .entry((site.pool.clone(), site.memory, site.device))
                .or_default();
            pool.0 = pool.0.saturating_add(site.outstanding_bytes);
            pool.1.add(&site.history.outstanding);
        }
        candidates.push(Candidate {
            target: Target::Host(pi),
            prepared: host.after(&grid, warmup_end),
            origin_ns: start,
            band: 0.0,
        });
        let mut aging = ProcessAging {
            step_s: grid.bucket_ns() as f64 / 1e9,
            points: host.after(&grid, warmup_end).values.len(),
            stored_series: process.aging.size().0,
            stored_runs: process.aging.size().1,
            host: Tested::default(),
            devices: Vec::new(),
            pools: Vec::new(),
            uss: None,
            rss: None,
            exhaustion: Vec::new(),
        };
        for (di, (device, series)) in devices.iter().enumerate() {
            candidates.push(Candidate {
                target: Target::Device(pi, di),
                prepared: series.after(&grid, warmup_end),
                origin_ns: start,
                band: 0.0,
            });
            aging.devices.push(DeviceAging {
                device: *device,
                outstanding_bytes: series.values.last().copied().unwrap_or(0),
                tested: Tested::default(),
            });
        }
        for (k, ((pool, memory, device), (bytes, series))) in pools.iter().enumerate() {
            candidates.push(Candidate {
                target: Target::Pool(pi, k),
                prepared: series.after(&grid, warmup_end),
                origin_ns: start,
                band: 0.0,
            });
            aging.pools.push(PoolAging {
                pool: pool.clone(),
                memory: *memory,
                device: *device,
                outstanding_bytes: *bytes,
                tested: Tested::default(),
            });
        }
        let resident = [
            (process.aging.uss(), Target::Uss(pi)),
            (process.aging.rss(), Target::Rss(pi)),
        ];
        for (series, target) in resident {
            let Some(series) = series else { continue };
            let on_grid = OnGrid::of(series);
            let prepared = black_box(&on_grid.after(&grid, warmup_end));
            let latest = on_grid.values.last().copied().unwrap_or(0);
            let entry = ResidentAging {
                latest_bytes: latest,
                window_s: prepared.step_ns as f64 / 1e9,
                tested: Tested::default(),
            };
            match target {
                Target::Uss(_) => aging.uss = Some(entry),
                _ => aging.rss = Some(entry),
            }
            candidates.push(Candidate {
                target,
                prepared,
                origin_ns: start,
                band: 0.0,
            });
        }
        report.aging = Some(aging);
        if grid.first_tick.is_some() {
            run_host = Some(match run_host.take() {
                None => (grid, host),
                Some((g, sum)) => add_grids(g, sum, grid, host),
            });
            for (device, series) in devices {
                let Some(device) = device else { continue };
                let merged = match run_devices.remove(&device) {
                    None => (grid, series),
                    Some((g, sum)) => add_grids(g, sum, grid, series),
                };
                run_devices.insert(device, merged);
            }
        }
    }
    let run_series = run_host
        .as_ref()
        .map(|(g, s)| s.after(g, run_warmup_end))
        .unwrap_or_default();
    candidates.push(Candidate {
        target: Target::RunHost,
        prepared: run_series,
        origin_ns: run_start,
        band: 0.0,
    });

    for (k, (grid, series)) in run_devices.values().enumerate() {
        candidates.push(Candidate {
            target: Target::RunDevice(k),
            prepared: series.after(grid, run_warmup_end),
            origin_ns: run_start,
            band: 0.0,
        });
    }

    let machine_figures = machine::figures(state.machine.readings());
    for (k, figure) in machine_figures.iter().enumerate() {
        candidates.push(Candidate {
            target: Target::Machine(k),
            prepared: machine::series(state.machine.readings(), *figure, run_warmup_end),
            origin_ns: run_start,
            band: 0.0,
        });
    }

    let stats = compute(&candidates, opts.trend.alpha);
    // A constant series carries no information: left out of Benjamini–Hochberg's m, so a
    // process's thousands of start-up allocations that never change (a million in a
    // PyTorch process tracked with host memory) do not drown the sites that move.
    let tested: Vec<usize> = (0..stats.len())
        .filter(|&i| stats[i].is_some_and(|s| !s.constant))
        .collect();
    let p: Vec<f64> = tested
        .iter()
        .map(|&i| stats[i].map_or(1.0, |s| s.p))
        .collect();
    let rejected = fdr::benjamini_hochberg(&p, opts.trend.q);
    let mut significant = vec![false; stats.len()];
    for (&i, bh) in tested.iter().zip(rejected) {
        if let Some(s) = stats[i] {
            significant[i] = bh && s.p < opts.trend.alpha && s.ci_low > 0.0 && s.material;
            if significant[i] && matches!(candidates[i].target, Target::Outlived(..)) {
                significant[i] =
                    shape::classify(&candidates[i].prepared.values, true) == Shape::Drift;
            }
        }
    }

    let mut run = RunAging {
        alpha: opts.trend.alpha,
        q: opts.trend.q,
        warmup_s: opts.warmup_ns as f64 / 1e9,
        tests: tested.len(),
        significant: significant.iter().filter(|&&s| s).count(),
        host: Tested::default(),
        exhaustion: Vec::new(),
        machine: state.machine.latest().map(exhaustion::figures),
        host_used: None,
        gpus_used: Vec::new(),
        devices: run_devices
            .iter()
            .map(|(device, (_, series))| DeviceAging {
                device: Some(*device),
                outstanding_bytes: series.values.last().copied().unwrap_or(0),
                tested: Tested::default(),
            })
            .collect(),
    };
    let latest = state.machine.latest();
    let mut machine_tested: Vec<MachineAging> = machine_figures
        .iter()
        .map(|f| MachineAging {
            index: match f {
                machine::MachineFigure::GpuUsed(i) => Some(*i),
                machine::MachineFigure::HostUsed => None,
            },
            latest_bytes: latest.and_then(|r| f.of(r)).unwrap_or(0),
            window_s: 0.0,
            tested: Tested::default(),
        })
        .collect();
    for (i, c) in candidates.iter().enumerate() {
        let mut result = tested_result(c, stats[i], significant[i], opts);
        match c.target {
            Target::Site(pi, si) => {
                if let Some(t) = result.trend.as_mut() {
                    t.basis = Some(Basis::Outstanding);
                }
                reports[pi].sites[si].aging = result;
            }
            Target::Outlived(pi, si) => {
                // Reported where it shows a growth the outstanding bytes do not (the
                // site's candidate came first).
                let site = &mut reports[pi].sites[si];
                if significant[i] && !site.aging.trend.is_some_and(|t| t.significant) {
                    if let Some(t) = result.trend.as_mut() {
                        t.basis = Some(Basis::Outlived);
                    }
                    site.aging = result;
                }
            }
            Target::RunHost => run.host = result,
            Target::RunDevice(k) => run.devices[k].tested = result,
            Target::Machine(k) => {
                machine_tested[k].window_s = c.prepared.step_ns as f64 / 1e9;
                machine_tested[k].tested = result;
            }
            Target::Host(pi)
            | Target::Device(pi, _)
            | Target::Pool(pi, _)
            | Target::Uss(pi)
            | Target::Rss(pi) => {
                let Some(aging) = reports[pi].aging.as_mut() else {
                    continue;
                };
                match c.target {
                    Target::Host(_) => aging.host = result,
                    Target::Device(_, di) => aging.devices[di].tested = result,
                    Target::Pool(_, k) => aging.pools[k].tested = result,
                    Target::Uss(_) => {
                        if let Some(u) = aging.uss.as_mut() {
                            u.tested = result;
                        }
                    }
                    _ => {
                        if let Some(r) = aging.rss.as_mut() {
                            r.tested = result;
                        }
                    }
                }
            }
        }
    }
    for m in machine_tested {
        match m.index {
            None => run.host_used = Some(m),
            Some(_) => run.gpus_used.push(m),
        }
    }
    // The headroom while the processes ran: the sampler's last reading comes after the
    // command ended, when its memory is back.
    let reading_by = |ts: u64| {
        state
            .machine
            .readings()
            .rev()
            .find(|r| r.ts.0 <= ts)
            .or_else(|| state.machine.latest())
    };
    for (process, report) in state.processes.iter().zip(reports.iter_mut()) {
        let (Some(reading), Some(aging)) = (reading_by(process.last_ts.0), report.aging.as_mut())
        else {
            continue;
        };
        if let Some(t) = &aging.host.trend {
            aging.exhaustion.extend(exhaustion::host(reading, t));
        }
        for d in &aging.devices {
            if let (Some(t), Some(device)) = (&d.tested.trend, d.device) {
                aging.exhaustion.extend(exhaustion::gpu(reading, device, t));
            }
        }
    }
    let run_end = state
        .processes
        .iter()
        .map(|p| p.last_ts.0)
        .max()
        .unwrap_or(0);
    if let Some(reading) = reading_by(run_end) {
        if let Some(t) = &run.host.trend {
            run.exhaustion.extend(exhaustion::host(reading, t));
        }
        for d in &run.devices {
            if let (Some(t), Some(device)) = (&d.tested.trend, d.device) {
                run.exhaustion.extend(exhaustion::gpu(reading, device, t));
            }
        }
    }
    run
}

/// Whether `site` has freed at least [`OUTLIVED_MIN_FREES`] blocks.
fn turned_over(site: &crate::analysis::model::Site) -> bool {
    site.allocations.saturating_sub(site.outstanding_count) >= OUTLIVED_MIN_FREES
}

/// The churn band of a site that frees: its level's natural spread if its live blocks
/// were replaced at random, about √(live blocks) × its mean allocation size. A stationary
/// site with slow turnover wanders within that band for minutes, which a short series
/// cannot tell from growth; a leak leaves it. 0 for a site that never freed (nothing
/// churns: a step there is growth).
fn churn_band(site: &crate::analysis::model::Site) -> f64 {
    let freed = site.allocations.saturating_sub(site.outstanding_count);
    if freed == 0 || site.allocations == 0 {
        return 0.0;
    }
    let mean_size = site.allocated_bytes as f64 / site.allocations as f64;
    (site.outstanding_count as f64).sqrt() * mean_size
}

/// The black-box method: medians of 60-second windows of the readings (or the values
/// themselves once a bucket is that long).
fn black_box(p: &Prepared) -> Prepared {
    if p.step_ns == 0 || p.step_ns >= RESIDENT_WINDOW_NS {
        return p.clone();
    }
    let per_window = (RESIDENT_WINDOW_NS / p.step_ns).max(1) as usize;
    Prepared {
        values: window_medians(&p.values, per_window),
        step_ns: p.step_ns * per_window as u64,
        start_ns: p.start_ns,
    }
}

/// The sum of two processes' series, on the coarser of their grids.
pub(crate) fn add_grids(a: Grid, sa: OnGrid, b: Grid, sb: OnGrid) -> (Grid, OnGrid) {
    let level = a.level.max(b.level);
    let mut sum = sa.coarser(a.level, level);
    sum.add(&sb.coarser(b.level, level));
    let first_tick = match (a.first_tick, b.first_tick) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let grid = Grid {
        interval_ns: a.interval_ns,
        level,
        start_bucket: sum.start,
        first_tick,
        ticks: a.ticks.max(b.ticks),
    };
    (grid, sum)
}

/// The statistics of every candidate (`None`: too few values), on all cores.
fn compute(candidates: &[Candidate], alpha: f64) -> Vec<Option<Stat>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    let chunk = candidates.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = candidates
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|c| stat(&c.prepared.values, c.band, alpha))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// The statistics of one series, per value step.
fn stat(values: &[f64], band: f64, alpha: f64) -> Option<Stat> {
    if values.len() < MIN_POINTS || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    if values.iter().all(|&v| v == values[0]) {
        return Some(Stat {
            slope: 0.0,
            ci_low: 0.0,
            ci_high: 0.0,
            p: 1.0,
            material: false,
            constant: true,
        });
    }
    let s = trend::series_stats(values, alpha);
    Some(Stat {
        slope: s.slope,
        ci_low: s.ci_low,
        ci_high: s.ci_high,
        p: s.test.p,
        material: material(values, s.slope, s.ci_low, band),
        constant: false,
    })
}

/// Whether a growth is large enough to matter: over the series's span, the slope
/// interval's lower end adds at least [`MATERIAL_NOISE_UNITS`] units of the series's
/// noise: the robust spread (1.4826 × the median absolute deviation) of its residuals
/// around the Theil–Sen line, or the site's churn band ([`churn_band`]) where larger. A stationary site whose level wanders within its own range
/// (slow turnover: the Hamed–Rao correction only counts autocorrelation lags it finds
/// significant, and on a short series it finds too few) is not a leak, however small its
/// p-value; a leak passes as soon as it has clearly grown past its churn.
fn material(values: &[f64], slope: f64, ci_low: f64, band: f64) -> bool {
    let n = values.len();
    if n < 2 || ci_low <= 0.0 {
        return false;
    }
    let mut offsets: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| v - slope * i as f64)
        .collect();
    let Some(intercept) = sen::median_in_place(&mut offsets) else {
        return false;
    };
    let mut deviations: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (v - slope * i as f64 - intercept).abs())
        .collect();
    let noise = (1.4826 * sen::median_in_place(&mut deviations).unwrap_or(0.0)).max(band);
    ci_low * (n - 1) as f64 >= MATERIAL_NOISE_UNITS * noise
}

/// The report of one candidate.
fn tested_result(
    c: &Candidate,
    stat: Option<Stat>,
    significant: bool,
    opts: &AgingOptions,
) -> Tested {
    let p = &c.prepared;
    let per_hour = if p.step_ns == 0 {
        0.0
    } else {
        NS_PER_HOUR / p.step_ns as f64
    };
    let trend = stat.map(|s| TrendReport {
        slope_bytes_per_hour: s.slope * per_hour,
        ci_low: s.ci_low * per_hour,
        ci_high: s.ci_high * per_hour,
        p_value: s.p,
        significant,
        shape: shape::classify(&p.values, significant),
        basis: None,
    });
    let series = (opts.series && !p.values.is_empty()).then(|| SeriesReport {
        step_s: p.step_ns as f64 / 1e9,
        start_s: p.start_ns.saturating_sub(c.origin_ns) as f64 / 1e9,
        values: p.values.clone(),
    });
    Tested { trend, series }
}

#[cfg(test)]
mod outlived_tests;
#[cfg(test)]
mod tests;
