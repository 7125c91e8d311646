//! The model's result as Markdown tables and an SVG bar chart (plain SVG,
//! like crate::plot, for the reasons given there).

use std::fmt::Write as _;

use super::{Params, ProfileResult, Table};
use crate::scenario::FaultClass;

/// A duration in the largest unit that keeps it readable.
pub(super) fn duration(s: f64) -> String {
    match s {
        s if s >= 3600.0 => format!("{:.1} h", s / 3600.0),
        s if s >= 60.0 => format!("{:.1} min", s / 60.0),
        s => format!("{s:.1} s"),
    }
}

/// Nines of availability, −log10(1 − A) (99.9 % is 3).
pub fn nines(a: f64) -> f64 {
    -(1.0 - a).log10()
}

/// A as a percentage with enough decimals to give the unavailability three
/// significant digits (99.9118 %: 0.0882 % down).
pub fn percent(a: f64) -> String {
    let n = nines(a);
    let decimals = if n.is_finite() {
        // The epsilon keeps 0.99 at two nines despite rounding.
        ((n + 1e-9).floor() as usize + 1).clamp(2, 12)
    } else {
        2
    };
    format!("{:.*} %", decimals, a * 100.0)
}

fn minutes(s: f64) -> String {
    format!("{:.1} min", s / 60.0)
}

fn share(n: usize, of: usize) -> String {
    format!("{n} ({:.0} %)", n as f64 * 100.0 / of.max(1) as f64)
}

/// Mix-weighted share of faults that end a given way, in %.
fn weighted(r: &ProfileResult, p: &Params, f: impl Fn(&super::ClassInputs) -> f64) -> String {
    if !r.missing.is_empty() {
        return "—".into();
    }
    let total: f64 = p.mix.iter().map(|(_, w)| w).sum();
    let v: f64 = p
        .mix
        .iter()
        .filter_map(|(c, w)| Some(w / total * f(r.inputs.get(c)?)))
        .sum();
    format!("{:.1} %", v * 100.0)
}

/// The tables as Markdown.
pub fn markdown(t: &Table, p: &Params) -> String {
    let mut s = String::new();
    let total: f64 = p.mix.iter().map(|(_, w)| w).sum();
    let mix: Vec<String> = p
        .mix
        .iter()
        .map(|(c, w)| format!("{c} {:.0}%", w / total * 100.0))
        .collect();
    let _ = writeln!(
        s,
        "Availability model (docs/availability.md): λ = {} faults per year of uptime; mix {}; \
         a fault nothing restored costs U = M + R = {} + {} (noticed, then restarted).\n",
        p.faults_per_year,
        mix.join(", "),
        duration(p.manual_repair_s),
        duration(p.restart_s)
    );
    let _ = writeln!(
        s,
        "| profile | in place | restarted | not restored | E[downtime per fault] | availability | nines | downtime per year | restarts per year |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in &t.profiles {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.profile.name(),
            weighted(r, p, |i| i.p_in_place),
            weighted(r, p, |i| i.p_restart),
            weighted(r, p, |i| i.p_unrestored),
            r.expected_downtime_s.map_or("—".into(), duration),
            r.availability.map_or("—".into(), percent),
            r.availability
                .map_or("—".into(), |a| format!("{:.2}", nines(a))),
            r.downtime_per_year_s.map_or("—".into(), minutes),
            r.restarts_per_year
                .map_or("—".into(), |n| format!("{n:.2}")),
        );
    }
    s.push_str("\nShares of faults weighted by the mix.\n");
    for r in t.profiles.iter().filter(|r| !r.missing.is_empty()) {
        let names: Vec<&str> = r.missing.iter().map(|c| c.name()).collect();
        let _ = writeln!(
            s,
            "No result for {}: no runs of {} under it; measure them \
             (`selfheal-lab run --profiles {} --classes {}`) or leave them out of --mix.",
            r.profile.name(),
            names.join(", "),
            r.profile.name(),
            names.join(",")
        );
    }
    let _ = writeln!(
        s,
        "\nPer class (counts are injections; d: mean downtime of those runs):\n"
    );
    let _ = writeln!(
        s,
        "| class | weight | profile | runs | in place | restarted | not restored | d in place | d restarted | E[downtime per fault] | downtime per year |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut estimated = false;
    for &(c, w) in &p.mix {
        for r in &t.profiles {
            let Some(i) = r.inputs.get(&c) else {
                continue;
            };
            let count = |p: f64| (p * i.runs as f64).round() as usize;
            let (n_ip, n_r) = (count(i.p_in_place), count(i.p_restart));
            let mark = if i.restarts_estimated > 0 {
                estimated = true;
                " *"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "| {c} | {:.0}% | {} | {} | {} | {}{mark} | {} | {} | {} | {} | {} |",
                w / total * 100.0,
                r.profile.name(),
                i.runs,
                share(n_ip, i.runs),
                share(n_r, i.runs),
                share(count(i.p_unrestored), i.runs),
                if n_ip > 0 {
                    duration(i.d_in_place_s)
                } else {
                    "—".into()
                },
                if n_r > 0 {
                    duration(i.d_restart_s)
                } else {
                    "—".into()
                },
                r.per_class_s.get(&c).map_or("—".into(), |d| duration(*d)),
                r.class_per_year_s(c, p.faults_per_year)
                    .map_or("—".into(), minutes),
            );
        }
    }
    if t.in_place_unmeasured > 0 {
        let _ = writeln!(
            s,
            "\n{} runs restored in place were scored before the lab measured downtime: their \
             downtime is selfheal's recovery time alone (0 where selfheal did not act); re-score a copy of the directory with \
             `selfheal-lab report --out DIR` to measure it from the heartbeats.",
            t.in_place_unmeasured
        );
    }
    if estimated {
        let _ = writeln!(
            s,
            "\n\\* The kernel panicked and the lab did not follow the reboot (the profile ran \
             QEMU with -no-reboot): d = the last report of the fault before the panic + R."
        );
    }
    s
}

/// Downtime per year per profile as a bar chart, each bar split by class
/// (the class's share of E[D]).
pub fn svg(t: &Table, p: &Params) -> String {
    const COLORS: &[&str] = &[
        "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
        "#1f78b4", "#b2df8a",
    ];
    let (left, top, bar_w, gap, plot_h) = (90.0, 40.0, 60.0, 50.0, 300.0);
    let n = t.profiles.len().max(1) as f64;
    // Wide enough for the title with a single profile.
    let width = (left + n * (bar_w + gap) + 220.0).max(560.0);
    let height = top + plot_h + 70.0;
    let max = t
        .profiles
        .iter()
        .filter_map(|r| r.downtime_per_year_s)
        .fold(60.0_f64, f64::max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="13">Expected downtime per year at {} faults/year, by profile (split by fault class)</text>"#,
        p.faults_per_year
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + plot_h * (1.0 - f64::from(i) / 4.0);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - 220.0,
            left - 6.0,
            y + 4.0,
            minutes(v)
        );
    }
    let classes: &[FaultClass] = FaultClass::ALL;
    for (i, r) in t.profiles.iter().enumerate() {
        let x = left + gap / 2.0 + i as f64 * (bar_w + gap);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + bar_w / 2.0,
            top + plot_h + 16.0,
            r.profile.name()
        );
        let Some(total) = r.downtime_per_year_s else {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no result</text>"#,
                x + bar_w / 2.0,
                top + plot_h - 4.0
            );
            continue;
        };
        let mut y = top + plot_h;
        // Stacked in the mix's order, like the tables.
        for &(c, _) in &p.mix {
            let part = r.class_per_year_s(c, p.faults_per_year).unwrap_or(0.0);
            let h = plot_h * part / max;
            if h <= 0.0 {
                continue;
            }
            y -= h;
            let color = COLORS[classes.iter().position(|x| *x == c).unwrap_or(0) % COLORS.len()];
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar_w}" height="{h:.1}" fill="{color}"><title>{} {}: {}</title></rect>"#,
                r.profile.name(),
                c,
                minutes(part)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + bar_w / 2.0,
            y - 4.0,
            minutes(total)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + bar_w / 2.0,
            top + plot_h + 30.0,
            r.availability.map_or(String::new(), percent)
        );
    }
    for (i, c) in classes.iter().enumerate() {
        let y = top + 14.0 * i as f64;
        let x = width - 200.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{c}</text>"#,
            COLORS[i % COLORS.len()],
            x + 14.0,
            y + 9.0
        );
    }
    s.push_str("</svg>\n");
    s
}
