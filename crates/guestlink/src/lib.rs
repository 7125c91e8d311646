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
//!
//! The other direction: the host sends [`HostMessage`]s, also one JSON
//! line each, only to a guest whose hello said `host_messages: true` (an
//! older guest never reads the port, and the host does not fill its
//! buffers). A guest that meets a message type it does not know (a newer
//! host) logs it as such and skips the line.
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
        /// The guest reads [`HostMessage`]s from the port (absent in an
        /// older guest's hello: false).
        #[serde(default)]
        host_messages: bool,
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
        to_line(self)
    }
}

/// What the host says to the guest, one per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum HostMessage {
    /// The host rolled the whole VM back to a checkpoint. The guest's
    /// clocks jumped forward by about `rolled_back_ms` with none of its
    /// code run in between: a gap in its heartbeats or stall windows that
    /// spans this is not a stall.
    Rollback {
        /// Counts the host's rollbacks of this run of QEMU from 1.
        seq: u64,
        /// Age of the checkpoint restored, ms: the guest-visible time the
        /// rollback covered.
        rolled_back_ms: u64,
        /// How long QEMU stood stopped for the restore, ms.
        pause_ms: u64,
        /// Why the host rolled back (`panic`, `hang`, `guest_diagnosis`).
        trigger: String,
    },
}

impl HostMessage {
    /// The message as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        to_line(self)
    }
}

fn to_line<T: Serialize>(m: &T) -> Vec<u8> {
    // Serialising these types cannot fail (no maps with non-string keys,
    // no foreign Serialize impls).
    let mut v = serde_json::to_vec(m).unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_event::{Event, EventKind, Severity, Source};

    #[test]
    fn messages_round_trip_as_one_line() {
        let msgs = [
            GuestMessage::Hello {
                version: "0.1.0".into(),
                pid: 118,
                boot_id: "7d2f".into(),
                host_messages: true,
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
                    Source::Heavy,
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

    #[test]
    fn host_messages_round_trip_on_real_bytes() {
        let m = HostMessage::Rollback {
            seq: 2,
            rolled_back_ms: 5017,
            pause_ms: 27,
            trigger: "hang".into(),
        };
        let line = m.to_line();
        assert_eq!(
            line,
            b"{\"t\":\"rollback\",\"seq\":2,\"rolled_back_ms\":5017,\"pause_ms\":27,\"trigger\":\"hang\"}\n"
        );
        // Cut anywhere, as a socket may deliver it.
        for cut in 0..line.len() {
            let mut r = LineReader::<HostMessage>::of();
            let mut got = r.push(&line[..cut]);
            got.extend(r.push(&line[cut..]));
            assert_eq!(got, vec![Ok(m.clone())], "cut at {cut}");
        }
        // A newer host's message type: a clear error naming it, and the
        // next line still read.
        let mut bytes = b"{\"t\":\"time_sync\",\"x\":1}\n".to_vec();
        bytes.extend(&line);
        let got = LineReader::<HostMessage>::of().push(&bytes);
        assert!(
            matches!(&got[0], Err(BadLine::Invalid { error, head }) if error.contains("unknown variant") && head.contains("time_sync")),
            "{got:?}"
        );
        assert_eq!(got[1], Ok(m));
    }

    #[test]
    fn an_older_guests_hello_means_no_host_messages() {
        let old = b"{\"t\":\"hello\",\"version\":\"0.1.0\",\"pid\":1,\"boot_id\":\"b\"}\n";
        let got = LineReader::new().push(old);
        assert!(
            matches!(
                &got[0],
                Ok(GuestMessage::Hello {
                    host_messages: false,
                    ..
                })
            ),
            "{got:?}"
        );
    }
}
