//! The latency plot: for each class, selfheal's and each kernel detector's
//! median detection latency (bar) and p95 (whisker) on a log scale; a cross
//! at the top marks "never reported". Plain SVG, no dependency.
//!
//! Why not plotters (weighed for issue 13): every bar carries an SVG
//! `<title>` tooltip (class, detector, runs reported, median), which
//! plotters' SVG backend cannot emit (it draws lines, rects, paths, text
//! only); the grouped bars, their rotated "reported/runs" labels and the
//! "never reported" crosses would still be placed by hand in pixel
//! coordinates, so the code would not shrink; its default features pull
//! font-kit (fontconfig/freetype) and image codecs into a tool whose output
//! is committed under lab/results, while without them text widths are
//! guessed. This writer's output is byte-stable across machines and checked
//! by a test that parses it as XML.

use std::fmt::Write as _;

use crate::report::{Latency, Report};

const SERIES: &[(&str, &str)] = &[
    ("selfheal", "#1b9e77"),
    ("soft_lockup", "#d95f02"),
    ("hard_lockup", "#7570b3"),
    ("hung_task", "#e7298a"),
    ("rcu_stall", "#66a61e"),
    ("oom_killer", "#a6761d"),
];

const MIN_MS: f64 = 10.0;
const MAX_MS: f64 = 300_000.0;

/// The series of one class: (name, latency) for selfheal and, per kernel
/// detector, the profile with the fastest median (its name is in the label).
fn class_series(r: &Report, idx: usize) -> Vec<(String, &'static str, Latency)> {
    let c = &r.classes[idx];
    let mut out = vec![("selfheal".to_string(), SERIES[0].1, c.selfheal.clone())];
    for &(det, color) in &SERIES[1..] {
        let mut best: Option<(String, Latency)> = None;
        for (profile, per) in &c.kernel {
            if let Some(l) = per.get(det) {
                let better = match &best {
                    None => true,
                    Some((_, b)) => match (l.median_ms, b.median_ms) {
                        (Some(x), Some(y)) => x < y,
                        (Some(_), None) => true,
                        _ => false,
                    },
                };
                if better {
                    best = Some((profile.clone(), l.clone()));
                }
            }
        }
        if let Some((profile, l)) = best {
            out.push((format!("{det} ({profile})"), color, l));
        }
    }
    out
}

fn y_of(ms: f64, top: f64, height: f64) -> f64 {
    let v = ms.clamp(MIN_MS, MAX_MS);
    let frac = (v.log10() - MIN_MS.log10()) / (MAX_MS.log10() - MIN_MS.log10());
    top + height * (1.0 - frac)
}

/// Renders the plot as an SVG document.
pub fn svg(r: &Report) -> String {
    let groups = r.classes.len().max(1);
    let bar_w = 11.0;
    let group_w = bar_w * SERIES.len() as f64 + 24.0;
    let (left, top, plot_h) = (70.0, 40.0, 320.0);
    let width = left + group_w * groups as f64 + 200.0;
    let height = top + plot_h + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = if r.meta.placeholder {
        "Detection latency per class (PLACEHOLDER run: no selfheal numbers)"
    } else {
        "Detection latency per class: median bar (label: runs reported/runs), p95 whisker, x = never reported"
    };
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14">{title}</text>"#
    );
    // Log axis: decades from 10 ms to 100 s, plus 300 s at the top.
    for (ms, label) in [
        (10.0, "10 ms"),
        (100.0, "100 ms"),
        (1000.0, "1 s"),
        (10_000.0, "10 s"),
        (100_000.0, "100 s"),
    ] {
        let y = y_of(ms, top, plot_h);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.0}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + group_w * groups as f64,
            left - 6.0,
            y + 4.0
        );
    }
    for (gi, class) in r.classes.iter().enumerate() {
        let gx = left + group_w * gi as f64 + 12.0;
        for (si, (name, color, l)) in class_series(r, gi).iter().enumerate() {
            let x = gx + bar_w * si as f64;
            let tip = format!(
                "{} {}: {}/{} reported",
                class.class, name, l.detected, l.runs
            );
            match l.median_ms {
                Some(med) => {
                    let y = y_of(med, top, plot_h);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{tip}, median {med:.0} ms</title></rect>"#,
                        bar_w - 2.0,
                        top + plot_h - y
                    );
                    // Detection rate above the bar: a fast median from 1 of 4 runs is no win.
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" font-size="7" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}/{}</text>"#,
                        x + (bar_w - 2.0) / 2.0 + 2.5,
                        top + plot_h - 4.0,
                        x + (bar_w - 2.0) / 2.0 + 2.5,
                        top + plot_h - 4.0,
                        l.detected,
                        l.runs
                    );
                    if let Some(p95) = l.p95_ms {
                        let yp = y_of(p95, top, plot_h);
                        let cx = x + (bar_w - 2.0) / 2.0;
                        let _ = writeln!(
                            s,
                            r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{yp:.1}" y2="{y:.1}" stroke="black"/><line x1="{:.1}" x2="{:.1}" y1="{yp:.1}" y2="{yp:.1}" stroke="black"/>"#,
                            cx - 3.0,
                            cx + 3.0
                        );
                    }
                }
                None if l.runs > 0 => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" fill="{color}" text-anchor="middle" font-weight="bold">x<title>{tip}</title></text>"#,
                        x + (bar_w - 2.0) / 2.0,
                        top + 10.0
                    );
                }
                None => {}
            }
        }
        let lx = gx + bar_w * SERIES.len() as f64 / 2.0;
        let ly = top + plot_h + 12.0;
        let _ = writeln!(
            s,
            r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-35 {lx:.1} {ly:.1})">{}</text>"#,
            class.class
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{left}" x2="{left}" y1="{top}" y2="{:.0}" stroke="black"/>"#,
        top + plot_h
    );
    let lx = left + group_w * groups as f64 + 20.0;
    for (i, (name, color)) in SERIES.iter().enumerate() {
        let y = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.0}" y="{:.0}" width="12" height="12" fill="{color}"/><text x="{:.0}" y="{:.0}">{name}</text>"#,
            y - 10.0,
            lx + 18.0,
            y
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{lx:.0}" y="{:.0}">kernel: fastest profile</text>"#,
        top + 10.0 + 18.0 * SERIES.len() as f64 + 6.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ClassSummary, Meta};
    use crate::scenario::FaultClass;

    fn lat(runs: usize, detected: usize, median: Option<f64>, p95: Option<f64>) -> Latency {
        Latency {
            runs,
            detected,
            median_ms: median,
            p95_ms: p95,
        }
    }

    /// Well-formed XML, one tooltip per drawn bar or cross, whiskers only
    /// where a p95 exists.
    #[test]
    fn svg_parses_and_every_bar_has_a_tooltip() {
        let mut c = ClassSummary {
            class: FaultClass::PreemptLoop,
            injections: 4,
            selfheal: lat(4, 4, Some(198.0), Some(230.0)),
            diagnosed: 4,
            diagnosed_correctly: 4,
            culprit_correct: 4,
            diagnoses: Default::default(),
            recovered: 4,
            healthy_without_selfheal: 0,
            rebooted: 0,
            hung: 0,
            degraded: 0,
            missed: 0,
            runs_with_early_alarms: 0,
            undetectable_by_design: false,
            kernel: Default::default(),
            restarted: 0,
            healing: Default::default(),
        };
        c.kernel
            .entry("tight".into())
            .or_default()
            .insert("soft_lockup".into(), lat(4, 0, None, None));
        c.kernel
            .entry("default".into())
            .or_default()
            .insert("rcu_stall".into(), lat(4, 3, Some(21_000.0), None));
        let r = Report {
            meta: Meta::default(),
            classes: vec![c],
            fault_free: vec![],
            runs: vec![],
            vm: None,
        };
        let text = svg(&r);
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let titles: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("title"))
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(titles.len(), 3, "{titles:?}");
        assert!(titles
            .iter()
            .any(|t| t.contains("selfheal: 4/4 reported, median 198 ms")));
        assert!(titles
            .iter()
            .any(|t| t.contains("soft_lockup (tight): 0/4 reported")));
        assert!(titles
            .iter()
            .any(|t| t.contains("rcu_stall (default): 3/4 reported")));
        // One whisker pair (selfheal's p95), none for the others.
        let whiskers = doc
            .descendants()
            .filter(|n| n.has_tag_name("line") && n.attribute("stroke") == Some("black"))
            .count();
        assert_eq!(whiskers, 2 + 1, "two whisker lines and the y axis");
    }
}
