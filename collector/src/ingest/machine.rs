//! Reading `DIR/machine.lks` back: the machine memory readings the run's sampler wrote (a
//! wire stream of `Record::Machine` frames), applied to the state in order.

use crate::ingest::decode::decode_stream;
use crate::ingest::recording::MACHINE_FILE;
use crate::state::{ConnClose, RunState};
use leakscope_protocol::Record;
use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

/// Applies the machine readings of the recording in `dir` to `state`. A recording without
/// the file (older, or the sampler never started) gives nothing and no warning; one whose
/// last frame is cut (still being written, or the collector was killed) keeps every reading
/// before the cut, silently. Otherwise a damaged file gives a warning naming the file and
/// the problem, after applying what could be read.
pub fn load_machine(dir: &Path, state: &mut RunState, until: Option<u64>) -> Option<String> {
    load_machine_after(dir, state, None, until)
}

/// [`load_machine`], leaving out the readings stamped at or before `after` too (those a
/// checkpoint's state holds already).
pub fn load_machine_after(
    dir: &Path,
    state: &mut RunState,
    after: Option<u64>,
    until: Option<u64>,
) -> Option<String> {
    let path = dir.join(MACHINE_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("cannot read {}: {e}", path.display())),
    };
    let name = path.display().to_string();
    let mut foreign = 0u64;
    let ended = decode_stream(file, &name, |records| {
        for r in records.drain(..) {
            match r {
                Record::Machine(m) if until.is_some_and(|cut| m.ts.0 > cut) => {}
                Record::Machine(m) if after.is_some_and(|seen| m.ts.0 <= seen) => {}
                Record::Machine(m) => state.apply_machine(m),
                _ => foreign += 1,
            }
        }
    });
    match ended.close {
        ConnClose::Damaged(problem) if !ended.truncated => Some(problem),
        _ if foreign > 0 => Some(format!(
            "{name}: {foreign} records that are not machine readings (ignored)"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_protocol::wire::{encode_frame, encode_header};
    use leakscope_protocol::{CgroupMemory, Dropped, GpuMemory, MachineReading, Timestamp};

    fn reading(ts: u64) -> MachineReading {
        MachineReading {
            ts: Timestamp(ts),
            mem_total: 8 << 30,
            mem_available: (4 << 30) + ts,
            cgroup: Some(CgroupMemory {
                limit: None,
                usage: ts,
            }),
            gpus: vec![GpuMemory {
                index: 0,
                uuid: "GPU-1".into(),
                total: 16 << 30,
                used: ts,
                free: (16 << 30) - ts,
            }],
        }
    }

    fn file_of(readings: &[MachineReading]) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_header(&mut bytes);
        for r in readings {
            encode_frame(&[Record::Machine(r.clone())], &mut bytes).unwrap();
        }
        bytes
    }

    fn load(bytes: &[u8]) -> (RunState, Option<String>) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(MACHINE_FILE), bytes).unwrap();
        let mut state = RunState::default();
        let w = load_machine(t.path(), &mut state, None);
        (state, w)
    }

    #[test]
    fn written_readings_come_back_in_order() {
        let readings: Vec<_> = (1..=4).map(|i| reading(i * 1_000)).collect();
        let (state, w) = load(&file_of(&readings));
        assert_eq!(w, None);
        assert_eq!(
            state.machine.readings().cloned().collect::<Vec<_>>(),
            readings
        );
    }

    #[test]
    fn a_cut_last_frame_is_silent_and_keeps_the_rest() {
        let readings: Vec<_> = (1..=3).map(|i| reading(i * 1_000)).collect();
        let bytes = file_of(&readings);
        let (state, w) = load(&bytes[..bytes.len() - 3]);
        assert_eq!(w, None);
        assert_eq!(
            state.machine.readings().cloned().collect::<Vec<_>>(),
            readings[..2]
        );
        // Only the header, cut: nothing, silently.
        let (state, w) = load(&bytes[..5]);
        assert_eq!(w, None);
        assert!(state.machine.is_empty());
    }

    #[test]
    fn absent_file_is_nothing() {
        let t = tempfile::tempdir().unwrap();
        let mut state = RunState::default();
        assert_eq!(load_machine(t.path(), &mut state, None), None);
        assert!(state.machine.is_empty());
    }

    #[test]
    fn damage_is_a_warning_naming_the_file() {
        let (state, w) = load(b"not a leakscope stream at all");
        let w = w.unwrap();
        assert!(
            w.contains(MACHINE_FILE) && w.contains("not a leakscope stream"),
            "{w}"
        );
        assert!(state.machine.is_empty());

        let mut bytes = file_of(&[reading(1)]);
        bytes.extend_from_slice(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
        let (state, w) = load(&bytes);
        let w = w.unwrap();
        assert!(w.contains(MACHINE_FILE) && w.contains("corrupt"), "{w}");
        assert_eq!(state.machine.readings().len(), 1);

        let mut bytes = file_of(&[reading(1)]);
        encode_frame(&[Record::Dropped(Dropped::default())], &mut bytes).unwrap();
        let (state, w) = load(&bytes);
        assert!(w.unwrap().contains("not machine readings"));
        assert_eq!(state.machine.readings().len(), 1);
    }
}
