//! Allocation-free number and field helpers for /proc text.

/// Parses leading ASCII digits of `s` as u64 (saturating). Returns `None` when
/// `s` does not start with a digit.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut any = false;
    for &b in s {
        if b.is_ascii_digit() {
            v = v.saturating_mul(10).saturating_add(u64::from(b - b'0'));
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

/// Parses a decimal like `12.34` as f64 without allocating.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let mut int: u64 = 0;
    let mut frac: u64 = 0;
    let mut scale: f64 = 1.0;
    let mut seen_dot = false;
    let mut any = false;
    for &b in s {
        match b {
            b'0'..=b'9' => {
                any = true;
                if seen_dot {
                    if scale < 1e15 {
                        frac = frac * 10 + u64::from(b - b'0');
                        scale *= 10.0;
                    }
                } else {
                    int = int.saturating_mul(10).saturating_add(u64::from(b - b'0'));
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
    }
    any.then(|| int as f64 + frac as f64 / scale)
}

/// Splits on ASCII spaces/tabs, skipping empty fields.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
}

/// Lines of `buf` without the trailing newline.
pub fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"123 kB"), Some(123));
        assert_eq!(parse_u64(b"x"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), Some(u64::MAX));
        assert_eq!(parse_f64(b"12.34"), Some(12.34));
        assert_eq!(parse_f64(b"0.00 avg60"), Some(0.0));
        assert_eq!(parse_f64(b"7"), Some(7.0));
        assert_eq!(parse_f64(b""), None);
    }

    #[test]
    fn splitting() {
        let f: Vec<&[u8]> = fields(b"  a\tbb  c ").collect();
        assert_eq!(f, vec![&b"a"[..], b"bb", b"c"]);
        assert_eq!(lines(b"x\n\ny\n").count(), 2);
    }
}
