//! Metrics exposition through prometheus-client: OpenMetrics text for
//! scrapers that ask for it, Prometheus text 0.0.4 otherwise.
//!
//! The one way to declare metric families: each part of selfheal that has
//! metrics implements [`Collector`] and, when `/metrics` is scraped, reads
//! its own lock-free atomics (and [`AtomicHistogram`]s) into the
//! [`Encoder`]; the [`Registry`] hands every collector's families to
//! prometheus-client, which writes the exposition. Hot paths (the light
//! detector's thread, the stall canaries) only ever touch atomics.
//!
//! A collector declares each family where it writes it, the way
//! prometheus-client's own `Collector::encode` does (`encode_descriptor`,
//! then one `encode_family` per label set): [`Encoder::family`] with the
//! literal name, help and type, then one [`Encoder::sample`] or
//! [`Encoder::histogram`] per series ([`Encoder::single`] for a family of
//! one unlabelled series). A collector with one series per app or VM uses
//! a small closure for the loop over them, not a table of families, so
//! every family's name is next to the code that computes its value.
//!
//! Names follow Prometheus conventions: `selfheal_` prefix, base units in
//! the name (`_seconds`, `_bytes`, `_ratio`), `_total` on counters (the
//! name a collector gives a counter is its sample name; OpenMetrics' TYPE
//! line drops the `_total`, as the format requires).
#![forbid(unsafe_code)]

mod histogram;

use std::sync::{Arc, RwLock};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};

pub use histogram::{
    AtomicHistogram, HistogramSnapshot, DETECTION_BUCKETS, DIAGNOSIS_BUCKETS, PAUSE_BUCKETS,
    RECOVERY_BUCKETS, RESTART_BUCKETS, SAMPLE_BUCKETS,
};

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A value that only goes up (name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution in buckets (name ends in its unit, e.g. `_seconds`).
    Histogram,
}

/// The content type of [`Registry::render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Registry::render`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone)]
enum Value {
    Scalar(f64),
    Histogram(HistogramSnapshot),
}

#[derive(Debug, Clone)]
struct Series {
    labels: Vec<(String, String)>,
    value: Value,
}

#[derive(Debug, Clone)]
struct Family {
    name: String,
    help: String,
    kind: MetricType,
    series: Vec<Series>,
}

/// Collects metric families during a scrape.
///
/// [`Encoder::new`] writes the families as Prometheus text into its string
/// when the encoder is dropped (handy in tests:
/// `c.collect(&mut Encoder::new(&mut out))`).
#[derive(Debug)]
pub struct Encoder<'a> {
    families: Vec<Family>,
    out: Option<&'a mut String>,
}

impl<'a> Encoder<'a> {
    /// An encoder that appends Prometheus text to `out` when dropped.
    pub fn new(out: &'a mut String) -> Encoder<'a> {
        Encoder {
            families: Vec::new(),
            out: Some(out),
        }
    }

    fn buffer() -> Encoder<'static> {
        Encoder {
            families: Vec::new(),
            out: None,
        }
    }

    /// Starts a family. Call once per family, then [`Encoder::sample`] (or
    /// [`Encoder::histogram`]) for each of its series.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) {
        debug_assert!(valid_name(name), "invalid metric name {name}");
        debug_assert!(
            kind != MetricType::Counter || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        self.families.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            series: Vec::new(),
        });
    }

    /// One series of the current counter or gauge family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.push(labels, Value::Scalar(value));
    }

    /// One series of the current histogram family.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        self.push(labels, Value::Histogram(h.clone()));
    }

    fn push(&mut self, labels: &[(&str, &str)], value: Value) {
        let Some(f) = self.families.last_mut() else {
            debug_assert!(false, "a sample before any family");
            return;
        };
        f.series.push(Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        });
    }

    /// A family with a single unlabelled series.
    pub fn single(&mut self, name: &str, help: &str, kind: MetricType, value: f64) {
        self.family(name, help, kind);
        self.sample(&[], value);
    }
}

impl Drop for Encoder<'_> {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            out.push_str(&encode(std::mem::take(&mut self.families), Format::Text));
        }
    }
}

/// True for names matching `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Something that writes metric families when `/metrics` is scraped.
pub trait Collector: Send + Sync {
    /// Adds this collector's families. Each family must be written by
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    OpenMetrics,
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

    fn families(&self) -> Vec<Family> {
        let collectors = self.collectors.read().unwrap_or_else(|p| p.into_inner());
        let mut enc = Encoder::buffer();
        for c in collectors.iter() {
            c.collect(&mut enc);
        }
        std::mem::take(&mut enc.families)
    }

    /// The exposition in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        encode(self.families(), Format::Text)
    }

    /// The exposition in OpenMetrics text format 1.0 (ends with `# EOF`).
    pub fn render_openmetrics(&self) -> String {
        encode(self.families(), Format::OpenMetrics)
    }

    /// The exposition a scraper's `Accept` header asks for, and its content
    /// type: OpenMetrics when it lists `application/openmetrics-text`
    /// (Prometheus does), Prometheus text otherwise.
    pub fn render_for(&self, accept: Option<&str>) -> (String, &'static str) {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            (self.render_openmetrics(), OPENMETRICS_CONTENT_TYPE)
        } else {
            (self.render(), TEXT_CONTENT_TYPE)
        }
    }
}

/// The families, as a prometheus-client collector for one encoding.
#[derive(Debug)]
struct Families(Vec<Family>);

impl prometheus_client::collector::Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType as P;
        for f in &self.0 {
            let (name, kind) = match f.kind {
                // prometheus-client appends `_total` to counter samples.
                MetricType::Counter => {
                    (f.name.strip_suffix("_total").unwrap_or(&f.name), P::Counter)
                }
                MetricType::Gauge => (f.name.as_str(), P::Gauge),
                MetricType::Histogram => (f.name.as_str(), P::Histogram),
            };
            let mut family = encoder.encode_descriptor(name, &f.help, None, kind)?;
            for s in &f.series {
                let labels: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut m = family.encode_family(&labels)?;
                // Whole numbers as integers ("3", not "3.0"): counts read
                // better, and the text stays what it was before.
                let whole = |v: f64| (v.fract() == 0.0 && v.abs() < 1e15).then_some(v as i64);
                match (&s.value, f.kind) {
                    (Value::Scalar(v), MetricType::Counter) => match whole(*v) {
                        Some(i) if i >= 0 => {
                            m.encode_counter::<NoLabelSet, u64, f64>(&(i as u64), None)?
                        }
                        _ => m.encode_counter::<NoLabelSet, f64, f64>(v, None)?,
                    },
                    (Value::Scalar(v), MetricType::Gauge) => match whole(*v) {
                        Some(i) => m.encode_gauge(&i)?,
                        None => m.encode_gauge(v)?,
                    },
                    (Value::Histogram(h), MetricType::Histogram) => {
                        m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?
                    }
                    // A collector mixed kinds within a family: leave it out
                    // rather than write an exposition scrapers reject.
                    _ => debug_assert!(false, "{}: value does not match the family's type", f.name),
                }
            }
        }
        Ok(())
    }
}

fn encode(families: Vec<Family>, format: Format) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Families(families)));
    let mut out = String::with_capacity(32 * 1024);
    let res = match format {
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    // Writing into a String cannot fail; a failure is an encoder bug.
    debug_assert!(res.is_ok(), "encoding metrics: {res:?}");
    out
}

#[cfg(test)]
mod tests;
