//! The guest link: how a `selfheal watch` running inside a VM talks to the
//! `selfheal vm` that runs the VM on the host.
//!
//! One JSON object per line over a virtio-serial port (guest side
//! `/dev/virtio-ports/org.selfheal.0`, host side a unix socket QEMU
//! listens on). The guest sends [`GuestMessage`]s: a hello, a heartbeat
//! every 100 ms, and every event it records. The host reads them with a
//! [`LineReader`], which resynchronises on line boundaries: a rollback of
//! the VM can cut a line in two or send one twice, and the guest is not
//! trusted (a line that does not parse, or is too long, is counted and
//! skipped, never a panic).
#![forbid(unsafe_code)]

mod port;
mod reader;

pub use port::{find_port, PortLookup};
pub use reader::{BadLine, LineReader, MAX_LINE_BYTES};

use serde::{Deserialize, Serialize};

/// The virtio-serial port name `selfheal vm` gives the guest.
pub const DEFAULT_PORT: &str = "org.selfheal.0";

/// What the guest says, one per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum GuestMessage {
    /// The guest's selfheal (re)opened the link.
    Hello {
        /// selfheal version.
        version: String,
        /// The guest daemon's pid.
        pid: u32,
        /// `/proc/sys/kernel/random/boot_id`: a new value means the guest
        /// rebooted; the same after a gap means it was rolled back or stalled.
        boot_id: String,
    },
    /// The guest's selfheal is alive.
    Heartbeat {
        /// Counts up from 1 per hello (goes back after a rollback).
        seq: u64,
        /// Guest CLOCK_MONOTONIC, ms.
        mono_ms: u64,
        /// Guest CLOCK_REALTIME, ms since the epoch.
        unix_ms: i64,
        /// The guest's own detectors are running (its light detector beat
        /// recently): false means the guest is alive but not watched.
        healthy: bool,
    },
    /// An event the guest's selfheal recorded.
    Event {
        /// The event as the guest stored it.
        event: Box<selfheal_event::Event>,
    },
}

impl GuestMessage {
    /// The message as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising these types cannot fail (no maps with non-string
        // keys, no foreign Serialize impls).
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_event::{Event, EventKind, Severity};

    #[test]
    fn messages_round_trip_as_one_line() {
        let msgs = [
            GuestMessage::Hello {
                version: "0.1.0".into(),
                pid: 118,
                boot_id: "7d2f".into(),
            },
            GuestMessage::Heartbeat {
                seq: 3,
                mono_ms: 9000,
                unix_ms: 1_795_329_116_524,
                healthy: true,
            },
            GuestMessage::Event {
                event: Box::new(Event::now(
                    EventKind::Diagnosis,
                    Severity::Critical,
                    "heavy",
                    "x\ny",
                )),
            },
        ];
        let mut r = LineReader::new();
        let mut bytes = Vec::new();
        for m in &msgs {
            let line = m.to_line();
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            bytes.extend(line);
        }
        let got: Vec<GuestMessage> = r.push(&bytes).into_iter().map(|m| m.unwrap()).collect();
        assert_eq!(got, msgs);
    }
}
