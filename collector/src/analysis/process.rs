//! Describing one process for the report: where it came from, how its stream ended, and
//! the notes a reader should see (the state's notes and its anomaly counts in words).

use crate::analysis::model::{OriginName, StreamStatus};
use crate::state::{Anomalies, ProcessState, StreamEnd};
use leakscope_protocol::{EndReason, Origin};

/// The process's origin and, for a fork child, its parent's pid.
pub fn origin(process: &ProcessState) -> (OriginName, Option<u32>) {
    match process.hello.origin {
        Origin::Exec => (OriginName::Exec, None),
        Origin::Fork { parent } => (OriginName::Fork, Some(parent.0)),
    }
}

/// How the stream ended and, for a damaged one, the problem.
pub fn stream(process: &ProcessState) -> (StreamStatus, Option<String>) {
    match &process.end {
        StreamEnd::Open => (StreamStatus::Open, None),
        StreamEnd::Clean(EndReason::Exit) => (StreamStatus::Clean, None),
        StreamEnd::Clean(EndReason::Exec) => (StreamStatus::Exec, None),
        StreamEnd::CutOff => (StreamStatus::CutOff, None),
        StreamEnd::Damaged(problem) => (StreamStatus::Damaged, Some(problem.clone())),
    }
}

/// The state's notes about the process, then one sentence per kind of anomaly seen.
pub fn notes(process: &ProcessState) -> Vec<String> {
    let mut notes = process.notes.clone();
    notes.extend(anomaly_notes(&process.anomalies));
    notes
}

fn anomaly_notes(a: &Anomalies) -> Vec<String> {
    let counted: [(u64, &str); 10] = [
        (
            a.records_before_hello,
            "records before the stream's Hello (ignored)",
        ),
        (a.extra_hellos, "extra Hello records (ignored)"),
        (
            a.stack_redefinitions,
            "conflicting stack definitions (the first was kept)",
        ),
        (
            a.code_redefinitions,
            "conflicting Python code definitions (the first was kept)",
        ),
        (
            a.undefined_stacks,
            "sites whose stack was never defined (shown without frames)",
        ),
        (
            a.unknown_module_unloads,
            "unloads of modules never loaded (ignored)",
        ),
        (
            a.empty_ranges,
            "mapped allocations or unmaps of an empty range",
        ),
        (
            a.implied_frees,
            "allocations counted as freed because their address was handed out again \
             without a free being seen",
        ),
        (
            a.malformed_gpu_records,
            "GPU records whose api does not fit them (ignored)",
        ),
        (
            a.machine_records_in_stream,
            "machine readings inside the process's stream (ignored)",
        ),
    ];
    let mut notes: Vec<String> = counted
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{what}: {n}"))
        .collect();
    if a.fingerprint_mismatch {
        notes.push(
            "the shim was built from another protocol version than this collector; \
             figures may be wrong"
                .to_owned(),
        );
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomalies_in_words() {
        assert!(anomaly_notes(&Anomalies::default()).is_empty());
        let notes = anomaly_notes(&Anomalies {
            implied_frees: 3,
            undefined_stacks: 1,
            fingerprint_mismatch: true,
            ..Anomalies::default()
        });
        assert_eq!(notes.len(), 3);
        assert_eq!(
            notes[0],
            "sites whose stack was never defined (shown without frames): 1"
        );
        assert!(notes[1].starts_with("allocations counted as freed"));
        assert!(notes[1].ends_with(": 3"));
        assert!(notes[2].contains("another protocol version"));
    }
}
