//! leakscope's collector: the `leakscope` binary's library.
//!
//! - [`cli`]: the command line.
//! - [`run`]: `leakscope run`: finds the shim, listens, spawns the command, waits.
//! - [`ingest`]: reading streams (live or recorded) into the state; the recording directory.
//! - [`state`]: live accounting per process and call site.
//! - [`analysis`]: symbolization and the report model.
//! - [`report`]: rendering the report model.
//! - [`error`]: the library's error types.

pub mod analysis;
pub mod cli;
pub mod error;
pub mod ingest;
pub mod report;
pub mod run;
pub mod state;
#[cfg(test)]
pub(crate) mod test_records;
