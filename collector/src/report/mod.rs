//! Rendering the report model: one [`Report`] trait and one file per output format
//! ([`text`] for people, with its GPU parts in `text_gpu.rs` (PyTorch's allocator in
//! `text_torch.rs`) and its host heap part in `text_heap.rs`, its growth part in
//! `text_aging.rs`; [`json`] for programs).

pub mod human;
pub mod json;
pub mod text;
mod text_aging;
mod text_gpu;
mod text_heap;
mod text_torch;

#[cfg(test)]
pub(crate) mod fixture;

use crate::analysis::model::ReportModel;
use std::io::{self, Write};

/// An output format of `leakscope report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable summary ranked by outstanding memory.
    Text,
    /// The report model as JSON (`format_version` 2).
    Json,
}

/// Something that writes a report model in one format.
pub trait Report {
    /// Writes `model` to `out`.
    fn render(&self, model: &ReportModel, out: &mut dyn Write) -> io::Result<()>;
}

/// Writes `model` to `out` in `format`, with that format's defaults.
pub fn render(format: Format, model: &ReportModel, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Text => text::TextReport::default().render(model, out),
        Format::Json => json::JsonReport::default().render(model, out),
    }
}
