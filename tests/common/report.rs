//! The typed JSON report (the contract's fields this suite reads), its parsing and the
//! helpers for looking through it.

use super::process::text;
use serde::Deserialize;
use std::fmt::Write as _;

pub fn parse_report(json: &[u8]) -> Report {
    serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!(
            "report is not the JSON of the contract: {e}\n{}",
            text(&json[..json.len().min(4000)])
        )
    })
}

#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub command: serde_json::Value,
    pub argv: Vec<String>,
    /// "exec" or "fork".
    pub origin: String,
    pub parent: Option<u32>,
    /// "clean", "exec", "cut_off", "open" or "damaged".
    pub stream: String,
    pub dropped: Dropped,
    pub unknown_frees: u64,
    pub totals: serde_json::Value,
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Dropped {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Site {
    pub memory: String,
    pub pool: String,
    pub outstanding_bytes: u64,
    pub outstanding_count: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub peak_bytes: u64,
    pub temporary: serde_json::Value,
    pub frames: Vec<Frame>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Frame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    pub address: serde_json::Value,
    #[serde(default)]
    pub inlined: bool,
}

impl Frame {
    /// The source file's base name, if known.
    pub fn file_name(&self) -> Option<&str> {
        self.file.as_deref().map(base_name)
    }

    /// The function name without a C++ parameter list.
    pub fn function_name(&self) -> Option<&str> {
        self.function.as_deref().map(strip_params)
    }

    pub fn describe(&self) -> String {
        format!(
            "{}{} ({}:{}) [{}]",
            self.function.as_deref().unwrap_or("??"),
            if self.inlined { " [inlined]" } else { "" },
            self.file.as_deref().unwrap_or("?"),
            self.line.map_or("?".to_owned(), |l| l.to_string()),
            self.module.as_deref().unwrap_or("?")
        )
    }
}

impl Site {
    /// Whether any frame's function name contains `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.function.as_deref().is_some_and(|n| n.contains(needle)))
    }

    /// Whether any frame lies in a source file of base name `file`.
    pub fn in_file(&self, file: &str) -> bool {
        self.frames.iter().any(|f| f.file_name() == Some(file))
    }

    /// The innermost frame's function, without parameters.
    pub fn innermost_function(&self) -> Option<&str> {
        self.frames.first().and_then(Frame::function_name)
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} / {}: {} bytes in {} blocks outstanding ({} allocations)\n",
            self.memory,
            self.pool,
            self.outstanding_bytes,
            self.outstanding_count,
            self.allocations
        );
        for f in &self.frames {
            let _ = writeln!(s, "      {}", f.describe());
        }
        s
    }
}

impl Process {
    /// The base name of argv[0].
    pub fn program(&self) -> &str {
        self.argv.first().map(|a| base_name(a)).unwrap_or("")
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "pid {} ppid {} origin {} parent {:?} stream {} argv {:?} dropped {:?} unknown_frees {}\n",
            self.pid,
            self.ppid,
            self.origin,
            self.parent,
            self.stream,
            self.argv,
            self.dropped,
            self.unknown_frees
        );
        for site in &self.sites {
            let _ = write!(s, "    {}", site.describe());
        }
        s
    }

    /// Fails unless the stream ended cleanly and nothing was dropped.
    pub fn assert_complete(&self) {
        assert_eq!(
            self.stream,
            "clean",
            "stream of {:?} did not end cleanly:\n{}",
            self.argv,
            self.describe()
        );
        assert_eq!(
            self.dropped,
            Dropped {
                allocs: 0,
                alloc_bytes: 0,
                frees: 0
            },
            "the shim dropped events of {:?}",
            self.argv
        );
    }

    /// Fails if any frame of any site lies in the shim: the contract removes them all.
    pub fn assert_no_shim_frames(&self) {
        for site in &self.sites {
            assert!(
                !site.frames.iter().any(|f| f
                    .module
                    .as_deref()
                    .is_some_and(|m| base_name(m) == "libleakscope_shim.so")),
                "a site of {:?} keeps a frame of the shim:\n    {}",
                self.argv,
                site.describe()
            );
        }
    }

    /// Sum of outstanding (bytes, blocks) over the sites that satisfy `pred`.
    pub fn outstanding_where(&self, pred: impl Fn(&Site) -> bool) -> (u64, u64) {
        self.sites
            .iter()
            .filter(|s| pred(s))
            .fold((0, 0), |(b, n), s| {
                (b + s.outstanding_bytes, n + s.outstanding_count)
            })
    }
}

impl Report {
    /// The processes whose argv[0] has base name `program`.
    pub fn by_program(&self, program: &str) -> Vec<&Process> {
        self.processes
            .iter()
            .filter(|p| p.program() == program)
            .collect()
    }

    /// The one process with `origin` whose argv[0] has base name `program`.
    pub fn one(&self, program: &str, origin: &str) -> &Process {
        let found: Vec<_> = self
            .by_program(program)
            .into_iter()
            .filter(|p| p.origin == origin)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {origin} process of {program}, report has:\n{}",
            self.describe()
        );
        found[0]
    }

    pub fn describe(&self) -> String {
        self.processes.iter().map(Process::describe).collect()
    }
}

pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `foo(int, char*)` -> `foo`; names without a parameter list are returned whole.
pub fn strip_params(name: &str) -> &str {
    match name.find('(') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}
