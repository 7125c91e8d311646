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
//! host) logs it as such and skips the line. The host says when it rolled
//! the VM back ([`HostMessage::Rollback`]) and, after every checkpoint,
//! when it held QEMU stopped ([`HostMessage::Stopped`]): the guest's clocks
//! run on while QEMU is stopped, and the guest must not take that time
//! for a stall of its own. To a guest whose hello asks for them
//! (`host_waits: true`) it also says, every 50 ms, how long each vCPU
//! thread waited for a host CPU ([`HostMessage::Waited`]): under TCG the
//! guest's clocks run on through that wait too.
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
        /// The guest wants [`HostMessage::Waited`] lines (absent in an
        /// older guest's hello: false, and it is sent none).
        #[serde(default)]
        host_waits: bool,
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
    /// QEMU stood stopped for checkpoints (sent after each one): the
    /// guest's clocks ran on through these spans with none of its code
    /// run, so a stall window they fill is no stall.
    Stopped(Stops),
    /// The vCPU threads waited for a host CPU (sent every 50 ms or so,
    /// only to a guest whose hello asked): the guest's clocks ran on
    /// through that wait with none of that vCPU's code run.
    Waited(Waits),
}

/// Most spans one [`Stops`] may carry (the host sends after every
/// checkpoint; more means a host saving up for a long time, or garbage).
pub const MAX_STOP_SPANS: usize = 64;
/// Longest span a [`Stops`] may report (a checkpoint stop is tens of ms;
/// longer is not a checkpoint).
pub const MAX_STOP_SPAN_US: u64 = 60_000_000;

/// When QEMU certainly stood stopped, on the host's CLOCK_MONOTONIC. The
/// guest places the spans on its own clock from two bounds on the offset
/// between the clocks: `offset_min_us` (from its heartbeats, which the
/// host stamps on arrival) and the arrival of these lines (which the guest
/// stamps), so a span is only ever placed where the stop certainly was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stops {
    /// Host CLOCK_MONOTONIC when this line was written, µs: every stop that
    /// ended before it is in this line or an earlier one.
    pub host_us: u64,
    /// Guest CLOCK_MONOTONIC minus the host's is at least this, µs: the
    /// largest (guest stamp − host arrival) of the guest's recent
    /// heartbeats. Absent before the host heard one.
    #[serde(default)]
    pub offset_min_us: Option<i64>,
    /// `[from, until)` µs in which QEMU certainly stood stopped (every
    /// thread stopped, none resumed yet), oldest first.
    pub spans: Vec<[u64; 2]>,
}

/// Why a [`Stops`] line is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopsError {
    /// More spans than [`MAX_STOP_SPANS`].
    #[error("{0} stop spans in one line (at most {MAX_STOP_SPANS}); a host sends one line per checkpoint")]
    TooMany(usize),
    /// A span that ends before it begins, is longer than
    /// [`MAX_STOP_SPAN_US`], ends after the line was written, or is out of
    /// order.
    #[error("stop span [{from}, {until}) µs is not a checkpoint stop before the line's time {host_us} µs (empty, reversed, out of order, over {MAX_STOP_SPAN_US} µs, or in the future)")]
    BadSpan {
        /// Its start.
        from: u64,
        /// Its end.
        until: u64,
        /// The line's `host_us`.
        host_us: u64,
    },
}

impl Stops {
    /// Checks what a hostile or broken host could send: bounded, ordered,
    /// non-empty spans, each over by the time the line was written.
    pub fn validate(&self) -> Result<(), StopsError> {
        if self.spans.len() > MAX_STOP_SPANS {
            return Err(StopsError::TooMany(self.spans.len()));
        }
        let mut prev_until = 0;
        for &[from, until] in &self.spans {
            if from >= until
                || until - from > MAX_STOP_SPAN_US
                || until > self.host_us
                || from < prev_until
            {
                return Err(StopsError::BadSpan {
                    from,
                    until,
                    host_us: self.host_us,
                });
            }
            prev_until = until;
        }
        Ok(())
    }
}

/// Most entries one [`Waits`] may carry (a line every 50 ms with one
/// entry per vCPU that waited; more is a host saving up, or garbage).
pub const MAX_WAITS: usize = 512;
/// Highest vCPU index a [`VcpuWait`] may name (QEMU's own limit is lower).
pub const MAX_VCPU: u32 = 4095;

/// How long the host's vCPU threads waited for a host CPU, on the host's
/// CLOCK_MONOTONIC; placed on the guest's clock like [`Stops`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waits {
    /// Host CLOCK_MONOTONIC when the waits were read, µs (the line is
    /// written just after): every wait that ended before it is in this
    /// line or an earlier one.
    pub host_us: u64,
    /// As in [`Stops::offset_min_us`].
    #[serde(default)]
    pub offset_min_us: Option<i64>,
    /// The waits, in the order read (`until_us` never decreases).
    pub waits: Vec<VcpuWait>,
}

/// vCPU `cpu`'s thread waited `wait_us` in all, runnable but not running,
/// somewhere within `[from_us, until_us)` (host µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuWait {
    /// QEMU's cpu-index (the guest's CPU number on a plain `-smp N`).
    pub cpu: u32,
    /// Start of the interval the wait lies in.
    pub from_us: u64,
    /// Its end.
    pub until_us: u64,
    /// Wait within it, µs (at most its length).
    pub wait_us: u64,
}

/// Why a [`Waits`] line is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitsError {
    /// More entries than [`MAX_WAITS`].
    #[error("{0} vCPU waits in one line (at most {MAX_WAITS}); a host sends one line every 50 ms")]
    TooMany(usize),
    /// An entry a host could not have measured.
    #[error("vCPU {cpu} wait of {wait_us} µs in [{from_us}, {until_us}) µs is not one a host measured before the line's time {host_us} µs (empty or reversed interval, a wait longer than it, over {MAX_STOP_SPAN_US} µs, out of order, in the future, or a vCPU over {MAX_VCPU})")]
    BadWait {
        /// Its vCPU.
        cpu: u32,
        /// Its interval's start.
        from_us: u64,
        /// Its interval's end.
        until_us: u64,
        /// Its wait.
        wait_us: u64,
        /// The line's `host_us`.
        host_us: u64,
    },
}

impl Waits {
    /// Checks what a hostile or broken host could send: bounded entries,
    /// each wait inside a non-empty interval that ended by the line's
    /// time, in order.
    pub fn validate(&self) -> Result<(), WaitsError> {
        if self.waits.len() > MAX_WAITS {
            return Err(WaitsError::TooMany(self.waits.len()));
        }
        let mut prev_until = 0;
        for w in &self.waits {
            if w.from_us >= w.until_us
                || w.until_us - w.from_us > MAX_STOP_SPAN_US
                || w.wait_us > w.until_us - w.from_us
                || w.until_us > self.host_us
                || w.until_us < prev_until
                || w.cpu > MAX_VCPU
            {
                return Err(WaitsError::BadWait {
                    cpu: w.cpu,
                    from_us: w.from_us,
                    until_us: w.until_us,
                    wait_us: w.wait_us,
                    host_us: self.host_us,
                });
            }
            prev_until = w.until_us;
        }
        Ok(())
    }
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
                host_waits: true,
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

    fn stops() -> HostMessage {
        HostMessage::Stopped(Stops {
            host_us: 5_000_000,
            offset_min_us: Some(-1_234),
            spans: vec![[4_100_000, 4_140_000], [4_190_000, 4_320_000]],
        })
    }

    #[test]
    fn stop_spans_round_trip_and_a_line_without_the_offset_reads() {
        let m = stops();
        let line = m.to_line();
        assert_eq!(
            line,
            b"{\"t\":\"stopped\",\"host_us\":5000000,\"offset_min_us\":-1234,\"spans\":[[4100000,4140000],[4190000,4320000]]}\n"
        );
        assert_eq!(LineReader::<HostMessage>::of().push(&line), vec![Ok(m)]);
        let got = LineReader::<HostMessage>::of()
            .push(b"{\"t\":\"stopped\",\"host_us\":9,\"spans\":[]}\n");
        assert_eq!(
            got,
            vec![Ok(HostMessage::Stopped(Stops {
                host_us: 9,
                offset_min_us: None,
                spans: vec![]
            }))]
        );
    }

    #[test]
    fn stop_spans_a_host_could_not_have_measured_are_refused() {
        let check = |host_us: u64, spans: &[[u64; 2]]| {
            Stops {
                host_us,
                offset_min_us: Some(0),
                spans: spans.to_vec(),
            }
            .validate()
        };
        assert_eq!(check(100, &[[10, 20], [20, 30]]), Ok(()));
        assert_eq!(check(100, &[]), Ok(()));
        for (host_us, spans) in [
            (100, &[[20, 20]][..]),                       // empty
            (100, &[[30, 20]][..]),                       // reversed
            (100, &[[10, 20], [15, 30]][..]),             // out of order
            (100, &[[10, 200]][..]),                      // not over when written
            (u64::MAX, &[[0, MAX_STOP_SPAN_US + 1]][..]), // too long
        ] {
            assert!(
                matches!(check(host_us, spans), Err(StopsError::BadSpan { .. })),
                "{spans:?}"
            );
        }
        assert_eq!(
            check(u64::MAX, &vec![[1, 2]; MAX_STOP_SPANS + 1]),
            Err(StopsError::TooMany(MAX_STOP_SPANS + 1))
        );
    }

    fn waits() -> HostMessage {
        HostMessage::Waited(Waits {
            host_us: 5_000_000,
            offset_min_us: Some(-1_234),
            waits: vec![
                VcpuWait {
                    cpu: 0,
                    from_us: 4_930_000,
                    until_us: 4_990_000,
                    wait_us: 22_000,
                },
                VcpuWait {
                    cpu: 1,
                    from_us: 4_949_000,
                    until_us: 4_990_000,
                    wait_us: 1_000,
                },
            ],
        })
    }

    #[test]
    fn vcpu_waits_round_trip_as_one_line() {
        let m = waits();
        let line = m.to_line();
        assert_eq!(
            line,
            b"{\"t\":\"waited\",\"host_us\":5000000,\"offset_min_us\":-1234,\"waits\":[{\"cpu\":0,\"from_us\":4930000,\"until_us\":4990000,\"wait_us\":22000},{\"cpu\":1,\"from_us\":4949000,\"until_us\":4990000,\"wait_us\":1000}]}\n"
        );
        assert_eq!(LineReader::<HostMessage>::of().push(&line), vec![Ok(m)]);
        let HostMessage::Waited(w) = waits() else {
            unreachable!()
        };
        assert_eq!(w.validate(), Ok(()));
    }

    #[test]
    fn vcpu_waits_a_host_could_not_have_measured_are_refused() {
        let check = |host_us: u64, w: &[(u32, u64, u64, u64)]| {
            Waits {
                host_us,
                offset_min_us: None,
                waits: w
                    .iter()
                    .map(|&(cpu, from_us, until_us, wait_us)| VcpuWait {
                        cpu,
                        from_us,
                        until_us,
                        wait_us,
                    })
                    .collect(),
            }
            .validate()
        };
        assert_eq!(
            check(100, &[(0, 10, 50, 40), (1, 20, 50, 0), (0, 50, 90, 1)]),
            Ok(())
        );
        assert_eq!(check(100, &[]), Ok(()));
        for (host_us, w) in [
            (100, &[(0, 20, 20, 0)][..]),                       // empty
            (100, &[(0, 30, 20, 1)][..]),                       // reversed
            (100, &[(0, 10, 20, 11)][..]),                      // longer than its interval
            (100, &[(0, 10, 200, 5)][..]),                      // not over when read
            (100, &[(0, 10, 50, 5), (1, 10, 40, 5)][..]),       // out of order
            (100, &[(MAX_VCPU + 1, 10, 20, 5)][..]),            // no such vCPU
            (u64::MAX, &[(0, 0, MAX_STOP_SPAN_US + 1, 1)][..]), // too long
        ] {
            assert!(
                matches!(check(host_us, w), Err(WaitsError::BadWait { .. })),
                "{w:?}"
            );
        }
        assert_eq!(
            check(u64::MAX, &vec![(0, 1, 2, 1); MAX_WAITS + 1]),
            Err(WaitsError::TooMany(MAX_WAITS + 1))
        );
    }

    #[test]
    fn hostile_host_lines_are_errors_never_panics() {
        // Mutations of real lines (bytes flipped, cut, spliced, numbers
        // made huge or negative), then pure noise: each is a message that
        // validates, or an error; the next good line still reads.
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let specials: [&[u8]; 8] = [
            b"18446744073709551616",
            b"-1",
            b"1e400",
            b"null",
            b"[[1,2,3]]",
            b"\"x\"",
            b"{}",
            b"[",
        ];
        for original in [stops(), waits()] {
            let good = original.to_line();
            let mut parsed = 0;
            for round in 0..5000 {
                let mut line = good[..good.len() - 1].to_vec();
                match round % 4 {
                    0 => {
                        for _ in 0..1 + next() % 4 {
                            let i = (next() as usize) % line.len();
                            line[i] = next() as u8;
                        }
                    }
                    1 => line.truncate((next() as usize) % line.len()),
                    2 => {
                        let i = (next() as usize) % line.len();
                        let sp = specials[(next() as usize) % specials.len()];
                        line.splice(i..i, sp.iter().copied());
                    }
                    _ => {
                        line = (0..next() % 200).map(|_| next() as u8).collect();
                    }
                }
                let mut r = LineReader::<HostMessage>::of();
                for m in r.push(&line).into_iter().chain(r.push(b"\n")) {
                    match m {
                        Ok(HostMessage::Stopped(st)) => {
                            parsed += 1;
                            let _ = st.validate();
                        }
                        Ok(HostMessage::Waited(w)) => {
                            parsed += 1;
                            let _ = w.validate();
                        }
                        _ => {}
                    }
                }
                assert_eq!(
                    r.push(&good),
                    vec![Ok(original.clone())],
                    "round {round}: after {:?}",
                    String::from_utf8_lossy(&line)
                );
            }
            // Some mutations leave a valid message (a digit changed).
            assert!(parsed > 0, "{original:?}");
        }
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
                    host_waits: false,
                    ..
                })
            ),
            "{got:?}"
        );
    }
}
