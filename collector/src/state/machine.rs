//! The machine's memory over the run (`Record::Machine`, taken by the collector's sampler,
//! not sent by a shim): host, cgroup and GPU readings, bounded like every series (see
//! `series.rs`: thinned evenly as it grows, keeping the first and the newest reading).

use crate::state::series::Series;
use leakscope_protocol::MachineReading;

/// The machine readings of one run, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineSeries {
    readings: Series<MachineReading>,
}

impl MachineSeries {
    /// Adds the newest reading.
    pub fn push(&mut self, reading: MachineReading) {
        self.readings.push(reading);
    }

    /// The newest reading.
    pub fn latest(&self) -> Option<&MachineReading> {
        self.readings.last()
    }

    /// The kept readings, oldest first, the newest last.
    pub fn readings(&self) -> impl ExactSizeIterator<Item = &MachineReading> + DoubleEndedIterator {
        self.readings.points()
    }

    /// Whether no reading arrived.
    pub fn is_empty(&self) -> bool {
        self.readings.pushed() == 0
    }

    /// How many readings arrived (the series may have thinned them).
    pub fn pushed(&self) -> u64 {
        self.readings.pushed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RunState;
    use leakscope_protocol::Timestamp;

    fn reading(ts: u64) -> MachineReading {
        MachineReading {
            ts: Timestamp(ts),
            mem_total: 1 << 30,
            mem_available: 1 << 29,
            ..MachineReading::default()
        }
    }

    #[test]
    fn keeps_readings_in_order_and_the_latest() {
        let mut s = MachineSeries::default();
        assert!(s.is_empty());
        assert_eq!(s.latest(), None);
        for ts in 1..=3 {
            s.push(reading(ts));
        }
        assert!(!s.is_empty());
        assert_eq!(s.pushed(), 3);
        assert_eq!(s.latest(), Some(&reading(3)));
        let ts: Vec<u64> = s.readings().map(|r| r.ts.0).collect();
        assert_eq!(ts, vec![1, 2, 3]);
    }

    #[test]
    fn stays_bounded_on_long_runs() {
        let mut s = MachineSeries::default();
        for ts in 0..10_000 {
            s.push(reading(ts));
        }
        assert!(s.readings().len() <= crate::state::series::MAX_POINTS);
        assert_eq!(s.readings().next().map(|r| r.ts.0), Some(0));
        assert_eq!(s.latest().map(|r| r.ts.0), Some(9_999));
    }

    #[test]
    fn a_machine_record_in_a_process_stream_is_counted_and_ignored() {
        use crate::state::ConnId;
        use leakscope_protocol::{Hello, Origin, Pid, Record};
        let mut state = RunState::default();
        let conn = ConnId(0);
        state.apply(
            conn,
            Record::Hello(Hello {
                pid: Pid(10),
                ppid: Pid(1),
                origin: Origin::Exec,
                exe: "/bin/x".into(),
                argv: vec!["x".into()],
                start: Timestamp(100),
                start_unix_ns: 0,
                fingerprint: leakscope_protocol::BUILD_FINGERPRINT,
            }),
        );
        state.apply(conn, Record::Machine(reading(u64::MAX / 2)));
        let p = state.process(Pid(10)).unwrap();
        assert_eq!(p.anomalies.machine_records_in_stream, 1);
        assert!(
            p.last_ts < Timestamp(u64::MAX / 2),
            "its time is not the stream's"
        );
        assert!(
            state.machine.is_empty(),
            "not a reading of the run's machine"
        );
    }

    #[test]
    fn run_state_applies_readings() {
        let mut state = RunState::default();
        assert!(state.machine.is_empty());
        state.apply_machine(reading(5));
        state.apply_machine(reading(6));
        assert_eq!(state.machine.latest().map(|r| r.ts.0), Some(6));
        assert_eq!(state.machine.readings().len(), 2);
    }
}
