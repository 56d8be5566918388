//! Stream-ordered pools (`cudaMemPool_t`) as their [`PoolEvent`]s describe them: per pool
//! handle the newest reading of its reserved and used bytes, whether the program created it
//! and whether it was destroyed, and how many readings came. Events are placed by their
//! timestamps, so a late one does not overwrite a newer reading. Every reading also goes
//! into a bounded series (reserved against used over time), in arrival order.

use crate::state::series::Series;
use leakscope_protocol::{DeviceOrdinal, PoolAction, PoolEvent, Timestamp};

/// One reading of a stream-ordered pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolReading {
    pub ts: Timestamp,
    pub reserved: u64,
    pub used: u64,
}

/// One stream-ordered pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolState {
    /// The device of the newest event that named one.
    pub device: Option<DeviceOrdinal>,
    /// A `Created` event was seen: the program made the pool (otherwise it is a device's
    /// default pool, or one made before tracking).
    pub created_by_program: bool,
    /// The newest of its `Created` and `Destroyed` events is `Destroyed`.
    pub destroyed: bool,
    /// Bytes the pool holds from the device, as of the newest event.
    pub reserved_bytes: u64,
    /// Bytes of those handed out, as of the newest event.
    pub used_bytes: u64,
    /// Events received (each carries a reading of both figures).
    pub readings: u64,
    /// Timestamp of the newest event (whose reading is kept).
    pub last_ts: Timestamp,
    /// Timestamp of the newest `Created` or `Destroyed` event.
    pub lifecycle_ts: Option<Timestamp>,
    /// The readings over time, thinned evenly on long runs, in arrival order.
    pub series: Series<PoolReading>,
}

impl PoolState {
    /// Takes `event` into account.
    pub fn apply(&mut self, event: &PoolEvent) {
        let newest = self.readings == 0 || event.ts >= self.last_ts;
        self.readings = self.readings.saturating_add(1);
        self.series.push(PoolReading {
            ts: event.ts,
            reserved: event.reserved,
            used: event.used,
        });
        if newest {
            self.last_ts = event.ts;
            self.reserved_bytes = event.reserved;
            self.used_bytes = event.used;
            if event.device.is_some() {
                self.device = event.device;
            }
        } else if self.device.is_none() {
            self.device = event.device;
        }
        let lifecycle = match event.action {
            PoolAction::Created => Some(false),
            PoolAction::Destroyed => Some(true),
            // Trimmed, Sampled: readings only.
            _ => None,
        };
        if let Some(destroyed) = lifecycle {
            self.created_by_program |= !destroyed;
            if self.lifecycle_ts.is_none_or(|ts| event.ts >= ts) {
                self.lifecycle_ts = Some(event.ts);
                self.destroyed = destroyed;
            }
        }
    }
}
