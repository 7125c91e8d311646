use std::time::Duration;

use super::*;

struct Two;
impl Collector for Two {
    fn collect(&self, enc: &mut Encoder<'_>) {
        enc.family("selfheal_x_total", "Things.\nMore.", MetricType::Counter);
        enc.sample(&[("rule", "a\"b\\c\nd")], 3.0);
        enc.sample(&[("rule", "plain"), ("level", "light")], 0.25);
        enc.single("selfheal_y_ratio", "Y.", MetricType::Gauge, f64::NAN);
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(20));
        enc.family("selfheal_z_seconds", "Z.", MetricType::Histogram);
        enc.histogram(&[("class", "rt_hog")], &h.snapshot());
    }
}

fn registry() -> Registry {
    let r = Registry::new();
    r.register(Arc::new(Two));
    r
}

#[test]
fn prometheus_text() {
    let text = registry().render();
    for line in [
        "# HELP selfheal_x_total Things.\\nMore.",
        "# TYPE selfheal_x_total counter",
        "selfheal_x_total{rule=\"a\\\"b\\\\c\\nd\"} 3",
        "selfheal_x_total{rule=\"plain\",level=\"light\"} 0.25",
        "# TYPE selfheal_y_ratio gauge",
        "selfheal_y_ratio NaN",
        "# TYPE selfheal_z_seconds histogram",
        "selfheal_z_seconds_bucket{class=\"rt_hog\",le=\"0.001\"} 1",
        "selfheal_z_seconds_bucket{class=\"rt_hog\",le=\"0.01\"} 1",
        "selfheal_z_seconds_bucket{class=\"rt_hog\",le=\"+Inf\"} 2",
        "selfheal_z_seconds_count{class=\"rt_hog\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(!text.contains("# EOF"), "{text}");
}

#[test]
fn openmetrics_text() {
    let text = registry().render_openmetrics();
    for line in [
        "# TYPE selfheal_x counter",
        "selfheal_x_total{rule=\"plain\",level=\"light\"} 0.25",
        "# TYPE selfheal_z_seconds histogram",
        "selfheal_z_seconds_count{class=\"rt_hog\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn accept_header_picks_the_format() {
    let r = registry();
    let (body, ct) = r.render_for(Some(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ));
    assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
    assert!(body.ends_with("# EOF\n"));
    let (body, ct) = r.render_for(Some("*/*"));
    assert_eq!(ct, TEXT_CONTENT_TYPE);
    assert!(!body.contains("# EOF"));
    assert_eq!(r.render_for(None).1, TEXT_CONTENT_TYPE);
}

#[test]
fn encoder_new_writes_on_drop() {
    let mut out = String::new();
    Two.collect(&mut Encoder::new(&mut out));
    assert!(out.contains("selfheal_y_ratio NaN"), "{out}");
}

#[test]
fn names() {
    assert!(valid_name("selfheal_cpu_ratio"));
    assert!(!valid_name("9x") && !valid_name("a-b") && !valid_name(""));
}
