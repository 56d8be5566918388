//! Shared harness of the end-to-end tests: builds the `leakscope` binary and the shim once
//! per test process, compiles the scenario programs of `tests/scenarios/`, runs them bare,
//! under `leakscope run` and under valgrind's memcheck, parses the JSON report and
//! valgrind's XML, and compares the two per call stack.
//!
//! Set `LEAKSCOPE_TEST_KEEP=1` to keep every test's work folder (recordings, valgrind
//! XML, compiled scenarios) for a look after the run; their paths are printed. Set
//! `LEAKSCOPE_TEST_NO_BUILD=1` to test the binaries already in the target folder as they
//! are, without building them first.

#![allow(dead_code)]

mod build;
mod compare;
pub mod cuda;
mod process;
mod report;
mod scenario;
mod valgrind;

// Each test binary uses only part of the harness, like the `dead_code` allowance above.
#[allow(unused_imports)]
pub use build::*;
#[allow(unused_imports)]
pub use compare::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use report::*;
#[allow(unused_imports)]
pub use scenario::*;
#[allow(unused_imports)]
pub use valgrind::*;
