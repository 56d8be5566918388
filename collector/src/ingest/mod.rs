//! Ingestion: streams into the state, live or from a recording, and the recording itself.
//!
//! - [`checkpoint`]: the saved state of a live run, replayed from and reclaiming its streams.
//! - [`meta`]: `meta.json`, what was run and how it ended.
//! - [`recording`]: the recording directory's layout, creating it, finding its contents.
//! - [`tee`]: copying a live stream's bytes to its file as they arrive.
//! - [`decode`]: one stream's frames through the wire decoder, damage included.
//! - [`pipeline`]: live ingestion, a reader thread per connection and one state thread.
//! - [`reclaim`]: giving stream bytes a checkpoint covers back to the file system.
//! - [`replay`]: reading a recording back into a state.
//! - [`machine`]: reading the run's machine memory readings (`machine.lks`) back.

pub mod checkpoint;
pub mod decode;
pub mod machine;
pub mod meta;
pub mod pipeline;
pub mod reclaim;
pub mod recording;
pub mod replay;
pub mod tee;

#[cfg(test)]
mod tests;
