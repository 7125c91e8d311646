//! One `/dev/kmsg` record (Documentation/ABI/testing/dev-kmsg):
//!
//! ```text
//! 6,339,5140900,-;NET: Registered protocol family 10
//!  SUBSYSTEM=net
//!  DEVICE=+net:lo
//! ```
//!
//! The prefix is `priority,sequence,timestamp_us,flag[,more]`; priority is
//! `facility << 3 | level`. Non-printable bytes in the text arrive escaped
//! as `\xNN`. Lines starting with a space are the record's dictionary.

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Syslog level 0 (emerg) … 7 (debug).
    pub level: u8,
    /// Syslog facility: 0 for the kernel, 1 (user) for text written to /dev/kmsg by programs.
    pub facility: u8,
    /// Sequence number; gaps mean records were overwritten before we read them.
    pub seq: u64,
    /// printk time: microseconds since boot (CLOCK_MONOTONIC-like).
    pub ts_us: u64,
    /// True for a continuation fragment (`+` or `c` flag).
    pub continuation: bool,
    /// The message, unescaped.
    pub text: String,
    /// `KEY=value` pairs from the dictionary lines.
    pub dict: Vec<(String, String)>,
}

impl Record {
    /// True when the kernel itself wrote it (facility 0). Programs may write
    /// arbitrary text to /dev/kmsg; such records are never taken as verdicts.
    pub fn is_kernel(&self) -> bool {
        self.facility == 0
    }
}

/// Parses one record as returned by one `read(2)` of /dev/kmsg. `None` when
/// the prefix is malformed.
pub fn parse_record(raw: &str) -> Option<Record> {
    let (prefix, rest) = raw.split_once(';')?;
    let mut fields = prefix.split(',');
    let pri: u32 = fields.next()?.trim().parse().ok()?;
    let seq: u64 = fields.next()?.parse().ok()?;
    let ts_us: u64 = fields.next()?.parse().ok()?;
    let flag = fields.next().unwrap_or("-");
    let mut lines = rest.split('\n');
    let text = unescape(lines.next().unwrap_or(""));
    let dict = lines
        .filter_map(|l| l.strip_prefix(' '))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), unescape(v)))
        .collect();
    Some(Record {
        level: (pri & 7) as u8,
        facility: ((pri >> 3) & 0xff) as u8,
        seq,
        ts_us,
        continuation: flag.starts_with('+') || flag.starts_with('c'),
        text,
        dict,
    })
}

/// Splits a buffer holding several records (as in a captured file) into
/// records: each record starts on a line that does not begin with a space.
pub fn split_records(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if !line.starts_with(' ') {
            if let Some(s) = start {
                out.push(&text[s..offset]);
            }
            start = Some(offset);
        }
        offset += line.len();
    }
    if let Some(s) = start {
        if s < text.len() {
            out.push(&text[s..]);
        }
    }
    out
}

/// Undoes the kernel's `\xNN` escaping.
fn unescape(s: &str) -> String {
    if !s.contains("\\x") {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() && bytes[i + 1] == b'x' {
            if let Some(v) = std::str::from_utf8(&bytes[i + 2..i + 4])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &str = include_str!("../tests/fixtures/host-6.18-kmsg.txt");

    #[test]
    fn every_captured_record_parses() {
        let records = split_records(CAPTURE);
        assert!(records.len() > 500, "{}", records.len());
        let parsed: Vec<Record> = records
            .iter()
            .map(|r| parse_record(r).unwrap_or_else(|| panic!("unparsed: {r:?}")))
            .collect();
        // Sequence numbers only grow; timestamps never go backwards by much.
        for w in parsed.windows(2) {
            assert!(w[1].seq > w[0].seq, "{:?} then {:?}", w[0], w[1]);
        }
        // One record was written by a program (the hang lab's marker).
        let user: Vec<&Record> = parsed.iter().filter(|r| !r.is_kernel()).collect();
        assert_eq!(user.len(), 1);
        assert!(user[0].text.starts_with("LAB TEST"));
        let first = &parsed[0];
        assert_eq!((first.level, first.seq, first.ts_us), (5, 0, 0));
        assert!(first.text.starts_with("Linux version 6.18"));
    }

    #[test]
    fn dictionary_lines() {
        let r = parse_record("6,196,340000,-;acpi PNP0A08:00: _OSC: OS supports\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n").unwrap();
        assert_eq!(r.text, "acpi PNP0A08:00: _OSC: OS supports");
        assert_eq!(
            r.dict,
            vec![
                ("SUBSYSTEM".to_string(), "acpi".to_string()),
                ("DEVICE".to_string(), "+acpi:PNP0A08:00".to_string())
            ]
        );
    }

    #[test]
    fn user_records_and_escapes() {
        let r = parse_record("12,900,1600000000,-;tool: tab\\x09here\n").unwrap();
        assert_eq!((r.facility, r.level), (1, 4));
        assert!(!r.is_kernel());
        assert_eq!(r.text, "tool: tab\there");
        let c = parse_record("4,901,1,+;tail").unwrap();
        assert!(c.continuation);
        assert!(parse_record("garbage").is_none());
        assert!(parse_record("x,1,2,-;t").is_none());
    }
}
