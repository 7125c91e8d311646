//! Splitting the byte stream from the guest into messages.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::GuestMessage;

/// Lines longer than this are dropped (an event with its evidence is a few
/// KiB; a guest may not make the host buffer without bound).
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// A line that is not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadLine {
    /// Longer than [`MAX_LINE_BYTES`]: skipped up to the next newline.
    TooLong {
        /// Bytes dropped so far.
        bytes: usize,
    },
    /// Not valid UTF-8 JSON of a known message (a line cut by a rollback
    /// and glued to the next one, or garbage).
    Invalid {
        /// What the parser said.
        error: String,
        /// The start of the line, for the log.
        head: String,
    },
}

/// Splits bytes into messages at newlines; keeps a partial line between
/// calls. A bad line never affects the next one. `M` is what the lines
/// are: [`GuestMessage`] on the host, [`crate::HostMessage`] in the guest.
#[derive(Debug)]
pub struct LineReader<M = GuestMessage> {
    buf: Vec<u8>,
    /// Dropping bytes until the next newline (the line was too long).
    skipping: usize,
    _m: PhantomData<fn() -> M>,
}

impl<M> Default for LineReader<M> {
    fn default() -> Self {
        LineReader {
            buf: Vec::new(),
            skipping: 0,
            _m: PhantomData,
        }
    }
}

impl LineReader<GuestMessage> {
    /// An empty reader of the guest's messages (the host's side).
    pub fn new() -> LineReader<GuestMessage> {
        LineReader::default()
    }
}

impl<M: DeserializeOwned> LineReader<M> {
    /// An empty reader of messages of type `M`.
    pub fn of() -> LineReader<M> {
        LineReader::default()
    }

    /// Feeds bytes; returns every complete line as a message or the reason
    /// it is not one.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Result<M, BadLine>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let (line, rest) = (&bytes[..i], &bytes[i + 1..]);
                    bytes = rest;
                    if self.skipping > 0 {
                        out.push(Err(BadLine::TooLong {
                            bytes: self.skipping + line.len(),
                        }));
                        self.skipping = 0;
                        continue;
                    }
                    if self.buf.len() + line.len() > MAX_LINE_BYTES {
                        out.push(Err(BadLine::TooLong {
                            bytes: self.buf.len() + line.len(),
                        }));
                        self.buf.clear();
                        continue;
                    }
                    self.buf.extend_from_slice(line);
                    let whole = std::mem::take(&mut self.buf);
                    if let Some(r) = parse(&whole) {
                        out.push(r);
                    }
                }
                None => {
                    if self.skipping > 0 {
                        self.skipping += bytes.len();
                    } else if self.buf.len() + bytes.len() > MAX_LINE_BYTES {
                        self.skipping = self.buf.len() + bytes.len();
                        self.buf.clear();
                    } else {
                        self.buf.extend_from_slice(bytes);
                    }
                    bytes = &[];
                }
            }
        }
        out
    }

    /// Forgets a partial line (the connection was reopened).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.skipping = 0;
    }
}

/// One line without its newline; blank lines are not messages at all.
fn parse<M: DeserializeOwned>(line: &[u8]) -> Option<Result<M, BadLine>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some(serde_json::from_slice(line).map_err(|e| BadLine::Invalid {
        error: e.to_string(),
        head: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(seq: u64) -> Vec<u8> {
        GuestMessage::Heartbeat {
            seq,
            mono_ms: seq * 100,
            unix_ms: 1,
            healthy: true,
        }
        .to_line()
    }

    #[test]
    fn lines_split_anywhere_are_joined() {
        let mut all = hb(1);
        all.extend(hb(2));
        for cut in 0..all.len() {
            let mut r = LineReader::new();
            let mut got = r.push(&all[..cut]);
            got.extend(r.push(&all[cut..]));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert!(got.iter().all(|m| m.is_ok()));
        }
    }

    #[test]
    fn a_line_cut_by_a_rollback_costs_only_itself() {
        // The guest sent half a heartbeat, was rolled back, and sent it again.
        let full = hb(7);
        let mut bytes = full[..full.len() / 2].to_vec();
        bytes.extend(&full);
        bytes.extend(hb(8));
        let got = LineReader::new().push(&bytes);
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], Err(BadLine::Invalid { .. })));
        assert!(matches!(got[1], Ok(GuestMessage::Heartbeat { seq: 8, .. })));
    }

    #[test]
    fn oversized_lines_are_skipped_without_buffering_them() {
        let mut r = LineReader::new();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..10 {
            assert!(r.push(&chunk).is_empty());
        }
        assert!(r.buf.len() <= MAX_LINE_BYTES);
        let mut tail = b"yy\n".to_vec();
        tail.extend(hb(1));
        let got = r.push(&tail);
        assert!(matches!(got[0], Err(BadLine::TooLong { bytes }) if bytes > MAX_LINE_BYTES));
        assert!(matches!(got[1], Ok(GuestMessage::Heartbeat { seq: 1, .. })));
    }

    #[test]
    fn random_bytes_never_panic_and_do_not_hide_the_next_good_line() {
        // xorshift: deterministic noise.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let mut noise = Vec::new();
            for _ in 0..(round % 300) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                noise.push((s & 0xff) as u8);
            }
            let mut r = LineReader::new();
            let _ = r.push(&noise);
            let mut bytes = b"\n".to_vec();
            bytes.extend(hb(42));
            let got = r.push(&bytes);
            assert!(
                matches!(
                    got.last(),
                    Some(Ok(GuestMessage::Heartbeat { seq: 42, .. }))
                ),
                "round {round}: {got:?}"
            );
        }
    }

    #[test]
    fn unknown_message_types_and_blank_lines() {
        let got = LineReader::new().push(b"{\"t\":\"future\",\"x\":1}\n\r\n  \n");
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0], Err(BadLine::Invalid { head, .. }) if head.contains("future")));
    }
}
