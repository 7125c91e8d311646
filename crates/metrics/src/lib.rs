//! Prometheus text exposition (format 0.0.4).
//!
//! Each part of selfheal that has metrics implements [`Collector`] and reads
//! its own lock-free atomics when `/metrics` is scraped; the [`Registry`]
//! concatenates their output. Names follow Prometheus conventions:
//! `selfheal_` prefix, base units in the name (`_seconds`, `_bytes`,
//! `_ratio`), `_total` for counters.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

/// The metric type line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A value that only goes up.
    Counter,
    /// A value that goes up and down.
    Gauge,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// Writes metric families in the text format.
#[derive(Debug)]
pub struct Encoder<'a> {
    out: &'a mut String,
    current: Option<String>,
}

impl<'a> Encoder<'a> {
    /// An encoder appending to `out`.
    pub fn new(out: &'a mut String) -> Encoder<'a> {
        Encoder { out, current: None }
    }

    /// Starts a family: writes `# HELP` and `# TYPE`. Call once per family,
    /// then [`Encoder::sample`] for each of its series.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) {
        debug_assert!(valid_name(name), "invalid metric name {name}");
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self.current = Some(name.to_string());
    }

    /// Writes one series of the current family. Non-finite values are
    /// written as Prometheus spells them (`NaN`, `+Inf`, `-Inf`).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = self.current.as_deref().unwrap_or("selfheal_unnamed");
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(self.out, value);
        self.out.push('\n');
    }

    /// A family with a single unlabelled series.
    pub fn single(&mut self, name: &str, help: &str, kind: MetricType, value: f64) {
        self.family(name, help, kind);
        self.sample(&[], value);
    }
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// True for names matching `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Something that writes metric families when `/metrics` is scraped.
pub trait Collector: Send + Sync {
    /// Appends this collector's families. Each family must be written by
    /// exactly one collector.
    fn collect(&self, enc: &mut Encoder<'_>);
}

/// The set of collectors the daemon serves.
#[derive(Default)]
pub struct Registry {
    collectors: RwLock<Vec<Arc<dyn Collector>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.collectors.read().map(|c| c.len()).unwrap_or(0);
        write!(f, "Registry({n} collectors)")
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a collector.
    pub fn register(&self, c: Arc<dyn Collector>) {
        self.collectors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
    }

    /// The full exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let collectors = self.collectors.read().unwrap_or_else(|p| p.into_inner());
        let mut enc = Encoder::new(&mut out);
        for c in collectors.iter() {
            c.collect(&mut enc);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two;
    impl Collector for Two {
        fn collect(&self, enc: &mut Encoder<'_>) {
            enc.family("selfheal_x_total", "Things.\nMore.", MetricType::Counter);
            enc.sample(&[("rule", "a\"b\\c\nd")], 3.0);
            enc.sample(&[("rule", "plain"), ("level", "light")], 0.25);
            enc.single("selfheal_y_ratio", "Y.", MetricType::Gauge, f64::NAN);
        }
    }

    #[test]
    fn text_format() {
        let r = Registry::new();
        r.register(Arc::new(Two));
        let text = r.render();
        let expected = "# HELP selfheal_x_total Things.\\nMore.\n# TYPE selfheal_x_total counter\n\
selfheal_x_total{rule=\"a\\\"b\\\\c\\nd\"} 3\n\
selfheal_x_total{rule=\"plain\",level=\"light\"} 0.25\n\
# HELP selfheal_y_ratio Y.\n# TYPE selfheal_y_ratio gauge\nselfheal_y_ratio NaN\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn names() {
        assert!(valid_name("selfheal_cpu_ratio"));
        assert!(!valid_name("9x") && !valid_name("a-b") && !valid_name(""));
    }
}
