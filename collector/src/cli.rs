//! The command line (`leakscope run`, `leakscope report`) and what each subcommand does
//! with the library: parse here, work in [`crate::run`] / [`crate::ingest`], render with
//! [`crate::report`].

use crate::analysis::aging::AgingOptions;
use crate::analysis::trend::TrendOptions;
use crate::analysis::{analyze, AnalysisOptions};
use crate::error::{RecordingError, RunError};
use crate::ingest::{meta, replay};
use crate::report::{render, Format};
use crate::run::{self, RunOptions, ShimSettings, Track};
use crate::state::StateOptions;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

/// leakscope: find the code that holds growing memory, host or GPU.
///
/// `leakscope run -- CMD` runs CMD with leakscope's shim preloaded, records every
/// allocation and free of every process it starts, and reports, per call site, what is
/// still held when it exits. The recording stays on disk; `leakscope report DIR` shows it
/// again.
#[derive(Debug, Parser)]
#[command(name = "leakscope", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command under leakscope; print the report to stderr when it exits and exit
    /// with its exit code.
    Run(RunArgs),
    /// Print the report of an earlier recording to stdout.
    Report(ReportArgs),
}

/// How the report is shown.
#[derive(Debug, Args)]
pub struct ViewArgs {
    /// Report format: `text` for people, `json` for programs.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Show at most N call sites per process (the N holding the most, and every site
    /// whose growth is significant); all by default.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    #[command(flatten)]
    pub aging: AgingArgs,
}

/// How growth over time is tested (docs/aging.md).
#[derive(Debug, Args)]
pub struct AgingArgs {
    /// Level of each series's Mann–Kendall test and of its slope interval.
    #[arg(long, value_name = "P", default_value_t = 0.01, value_parser = parse_level)]
    pub alpha: f64,
    /// False-discovery rate across all series of the run (Benjamini–Hochberg).
    #[arg(long, value_name = "Q", default_value_t = 0.10, value_parser = parse_level)]
    pub fdr: f64,
    /// Time at the start of each process left out of the growth tests (start-up).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_warmup)]
    pub warmup: Duration,
    /// Add each tested series's values to the report (JSON `series`).
    #[arg(long)]
    pub series: bool,
}

impl AgingArgs {
    /// The analysis settings these options give.
    pub fn options(&self) -> AgingOptions {
        AgingOptions {
            trend: TrendOptions {
                alpha: self.alpha,
                q: self.fdr,
            },
            warmup_ns: u64::try_from(self.warmup.as_nanos()).unwrap_or(u64::MAX),
            series: self.series,
        }
    }
}

fn parse_level(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a probability between 0 and 1 (exclusive)"
        )),
    }
}

/// A warm-up: `0s` or a duration [`parse_duration`] takes.
fn parse_warmup(s: &str) -> Result<Duration, String> {
    if s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_long_duration(s)
}

/// Options of `leakscope run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory to record into; it must not exist or be empty. Default:
    /// `./leakscope.<command name>.<leakscope's pid>`.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub view: ViewArgs,
    /// After the command exits, wait at most this many seconds for processes it left
    /// running (daemons, background children) to finish their streams; those still
    /// running then are reported as open.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0, value_parser = parse_seconds)]
    pub grace: f64,
    /// What to record: `all` (host and GPU memory) or `gpu` (CUDA memory only: the C heap
    /// and mmap hooks pass straight through, for host-heavy programs such as a PyTorch
    /// server whose host allocations would cost most of the overhead).
    #[arg(long, value_enum, default_value_t = Track::All)]
    pub track: Track,
    /// Time between readings of state that changes without an allocation event: heap
    /// arenas and resident memory, the PyTorch allocator's segments (fragmentation over
    /// time). A number with a unit: `500ms`, `1s`, `10s`, `2m`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Native stacks only: do not read the Python frames of Python threads.
    #[arg(long)]
    pub no_python: bool,
    /// With Python frames, also keep the native frames outside the innermost interpreter
    /// loop (the C code between Python calls). By default the native walk ends at the
    /// innermost eval loop, whose Python frames describe everything outside it: much
    /// cheaper for Python programs.
    #[arg(long, conflicts_with = "no_python")]
    pub full_native: bool,
    /// Do not track PyTorch's CUDA caching allocator block by block (in Python programs
    /// that import torch; segments are still recorded as CUDA allocations).
    #[arg(long)]
    pub no_torch_blocks: bool,
    /// The command to run and its arguments (put `--` before it when it has options of
    /// its own that could be mistaken for leakscope's).
    #[arg(value_name = "COMMAND", required = true, trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// Options of `leakscope report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The recording directory `leakscope run` wrote.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub view: ViewArgs,
    /// Report the recording as it stood this long after its first process started (e.g.
    /// `90m`): later records are left out. When did a growth become visible?
    #[arg(long, value_name = "DURATION", value_parser = parse_long_duration)]
    pub until: Option<Duration>,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds from 0 to 86400")),
    }
}

/// Parses `500ms`, `1s`, `1.5s`, `10s`, `2m`, `1h` (10 ms to 24 h).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_span(s, 86_400.0, "10ms..24h")
}

/// A time into a recording: as [`parse_duration`], up to 1,000 hours.
fn parse_long_duration(s: &str) -> Result<Duration, String> {
    parse_span(s, 3_600_000.0, "10ms..1000h")
}

/// Parses a number with a unit (`ms`, `s`, `m`, `h`) from 10 ms to `max_secs`.
fn parse_span(s: &str, max_secs: f64, range: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("`{s}` is not a duration such as `500ms` or `10s`"));
    }
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "" => return Err(format!("`{s}` needs a unit: ms, s, m or h (e.g. `10s`)")),
        u => return Err(format!("`{u}` in `{s}` is not a unit: use ms, s, m or h")),
    };
    let secs = num
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .ok_or_else(|| format!("`{s}` is not a duration such as `500ms` or `10s`"))?;
    if !(0.01..=max_secs).contains(&secs) {
        return Err(format!("`{s}` is outside {range}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("cannot write the report: {0}")]
    Output(io::Error),
}

impl CommandError {
    /// The exit status for this error (see [`RunError::exit_code`]); 2 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandError::Run(e) => e.exit_code(),
            _ => 2,
        }
    }
}

/// Carries out a parsed command line; returns the exit code (for `run`, the command's).
pub fn execute(cli: Cli) -> Result<i32, CommandError> {
    match cli.command {
        Command::Run(args) => run_command(args),
        Command::Report(args) => report_command(args),
    }
}

fn run_command(args: RunArgs) -> Result<i32, CommandError> {
    let opts = RunOptions {
        command: args.command,
        out: args.out,
        format: args.view.format,
        top: args.view.top,
        aging: args.view.aging.options(),
        grace: Duration::from_secs_f64(args.grace),
        state: StateOptions::default(),
        checkpoint_every: run::checkpoint_every_from_env(),
        shim: ShimSettings {
            track: args.track,
            interval: args.interval,
            python: !args.no_python,
            python_full_native: args.full_native,
            torch_blocks: !args.no_torch_blocks,
        },
    };
    // Buffered: a JSON report of a large process is tens of megabytes, and stderr is not.
    // Not locked for the whole run: the collector's threads may log meanwhile.
    let mut out = io::BufWriter::new(io::stderr());
    let outcome = run::run(&opts, &mut out)?;
    for w in &outcome.warnings {
        let _ = writeln!(out, "leakscope: warning: {w}");
    }
    let _ = writeln!(
        out,
        "leakscope: recording in {} (show it again: leakscope report {})",
        outcome.dir.display(),
        outcome.dir.display()
    );
    let _ = out.flush();
    Ok(outcome.exit_code)
}

fn report_command(args: ReportArgs) -> Result<i32, CommandError> {
    let read_at = meta::now_unix_ns();
    let loaded = replay::load_until(&args.dir, StateOptions::default(), args.until)?;
    for w in &loaded.state.warnings {
        eprintln!("leakscope: warning: {w}");
    }
    let mut model = analyze(
        &loaded.state,
        &loaded.meta,
        &AnalysisOptions {
            top: args.view.top,
            aging: args.view.aging.options(),
            ..AnalysisOptions::default()
        },
    );
    // A live recording's report is a snapshot of the run so far.
    model.live = loaded.live;
    model.snapshot_unix_ns = loaded.live.then_some(read_at);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = render(args.view.format, &model, &mut out).and_then(|()| out.flush());
    match written {
        // `leakscope report DIR | head`: the reader has all it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(CommandError::Output(e)),
        Ok(()) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("leakscope").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_its_options() {
        let cli = parse(&[
            "run", "--out", "d", "--top", "5", "--format", "json", "--", "ls", "-l",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.out, Some(PathBuf::from("d")));
        assert_eq!(a.view.top, Some(5));
        assert_eq!(a.view.format, Format::Json);
        assert_eq!(a.command, vec![OsString::from("ls"), OsString::from("-l")]);
        assert_eq!(a.grace, 2.0);
        // Without `--`, the command's own options stay its own.
        let Command::Run(a) = parse(&["run", "python3", "-c", "print(1)", "--top", "3"])
            .unwrap()
            .command
        else {
            panic!("not run")
        };
        assert_eq!(a.command.len(), 5);
        assert_eq!(a.view.top, None);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse(&["run", "--bogus", "--", "ls"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(e.to_string().contains("--bogus"), "{e}");
        let e = parse(&["run"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse(&["report"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("<DIR>"), "{e}");
        let e = parse(&["report", "d", "--format", "xml"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let e = parse(&["run", "--grace=-1", "--", "ls"]).unwrap_err();
        assert!(e.to_string().contains("seconds"), "{e}");
        assert_eq!(parse(&[]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn durations_take_a_unit_and_stay_in_range() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("10 parsecs")
            .unwrap_err()
            .contains("parsecs"));
        assert!(parse_duration("1ms").unwrap_err().contains("outside"));
        assert!(parse_duration("2d").unwrap_err().contains("not a unit"));
        let Command::Run(a) = parse(&["run", "--interval", "1s", "--no-python", "--", "ls"])
            .unwrap()
            .command
        else {
            panic!("not run")
        };
        assert_eq!(a.interval, Duration::from_secs(1));
        assert!(a.no_python && !a.no_torch_blocks);
        let e = parse(&["run", "--interval", "fast", "--", "ls"]).unwrap_err();
        assert!(e.to_string().contains("fast"), "{e}");
    }

    #[test]
    fn report_of_a_missing_directory_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("nope");
        let cli = parse(&["report", missing.to_str().unwrap()]).unwrap();
        let e = execute(cli).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            matches!(e, CommandError::Recording(RecordingError::Missing { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn help_documents_every_option() {
        for sub in ["run", "report"] {
            let mut cmd = Cli::command();
            let sc = cmd.find_subcommand_mut(sub).unwrap();
            for arg in sc.get_arguments() {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{sub} {} has no help",
                    arg.get_id()
                );
            }
        }
    }
}
