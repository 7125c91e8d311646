//! Steady-state availability from the lab's measurements (docs/availability.md).
//!
//! The model is an alternating renewal process. While the machine is up,
//! faults arrive as a Poisson process of rate λ (per year of uptime); a
//! fault is of class c with probability m_c (the mix). Under a profile p, a
//! fault of class c ends one of three ways, with the frequencies the lab
//! measured: restored in place (probability p_ip, mean downtime d_ip),
//! restarted and serving again (p_r, d_r: detection, grace, restart and
//! boot), or not restored (p_u: hung, or alive with the fault), which a
//! person repairs in M (a parameter). Then
//!
//! ```text
//! E[D_c]  = p_ip·d_ip + p_r·d_r + p_u·M          expected downtime of one fault
//! E[D]    = Σ_c m_c·E[D_c]
//! A       = E[U] / (E[U] + E[D]) = 1 / (1 + λ·E[D])   (E[U] = 1/λ)
//! downtime per year = (1 − A) · 1 year
//! ```
//!
//! by the renewal-reward theorem, whatever the distributions of up and down
//! times, provided faults do not arrive while the machine is down and each
//! restoration leaves it as good as new.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::{Healing, Report};
use crate::scenario::{FaultClass, KernelProfile};

/// Seconds in a (Julian) year.
pub const YEAR_S: f64 = 365.25 * 86_400.0;

/// Faults per machine per year when not given: one a month, a fault-prone
/// machine (the table scales: downtime is nearly proportional to λ).
pub const DEFAULT_FAULTS_PER_YEAR: f64 = 12.0;

/// The fault mix of docs/availability.md: user-space memory exhaustion and
/// D-state waits most common, kernel bugs rarer, an all-CPU deadlock rarest.
pub fn default_mix() -> Vec<(FaultClass, f64)> {
    use FaultClass::*;
    vec![
        (MemHog, 0.25),
        (DState, 0.15),
        (ForkBomb, 0.10),
        (KmemLeak, 0.10),
        (PreemptLoop, 0.10),
        (SpinSelf, 0.10),
        (RtHog, 0.05),
        (IrqLoop, 0.05),
        (KthreadLoop, 0.05),
        (SpinAbba, 0.05),
    ]
}

/// A `--mix` item that is not `class=weight`.
#[derive(Debug, thiserror::Error)]
pub enum MixError {
    /// Not `class=weight`.
    #[error("--mix `{0}`: expected class=weight, e.g. mem_hog=0.25")]
    Syntax(String),
    /// Unknown class.
    #[error("--mix: {0}")]
    Class(#[from] crate::scenario::UnknownClass),
    /// A weight that is not a non-negative number.
    #[error("--mix `{0}`: the weight must be a number ≥ 0")]
    Weight(String),
    /// All weights zero.
    #[error("--mix: the weights sum to zero")]
    Empty,
}

/// Parses `class=weight` items.
pub fn parse_mix(items: &[String]) -> Result<Vec<(FaultClass, f64)>, MixError> {
    let mut out = Vec::new();
    for item in items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
    {
        let (c, w) = item
            .split_once('=')
            .ok_or_else(|| MixError::Syntax(item.to_string()))?;
        let class: FaultClass = c.trim().parse()?;
        let w: f64 = w
            .trim()
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| MixError::Weight(item.to_string()))?;
        out.push((class, w));
    }
    if out.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
        return Err(MixError::Empty);
    }
    Ok(out)
}

/// The model's parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// λ: faults per year of uptime.
    pub faults_per_year: f64,
    /// m_c, not necessarily normalised.
    pub mix: Vec<(FaultClass, f64)>,
    /// M: seconds to repair a machine nothing restored.
    pub manual_repair_s: f64,
}

/// What the model needs of one class under one profile, from the lab.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassInputs {
    /// Injections measured.
    pub runs: usize,
    /// Restored in place (by selfheal, or by nothing at all).
    pub p_in_place: f64,
    /// Restarted and serving again.
    pub p_restart: f64,
    /// Not restored within the observation.
    pub p_unrestored: f64,
    /// Mean downtime when restored in place, s.
    pub d_in_place_s: f64,
    /// Mean downtime when restarted, s.
    pub d_restart_s: f64,
}

impl ClassInputs {
    /// From the lab's healing summary; `None` without runs.
    pub fn from_healing(h: &Healing) -> Option<ClassInputs> {
        if h.runs == 0 {
            return None;
        }
        let n = h.runs as f64;
        let restarted: usize = h.restarted.values().sum();
        Some(ClassInputs {
            runs: h.runs,
            p_in_place: (h.in_place + h.healthy_unaided) as f64 / n,
            p_restart: restarted as f64 / n,
            p_unrestored: h.not_restored as f64 / n,
            d_in_place_s: h.mean_in_place_ms.unwrap_or(0.0) / 1000.0,
            d_restart_s: h.mean_restart_ms.unwrap_or(0.0) / 1000.0,
        })
    }

    /// E[D_c] = p_ip·d_ip + p_r·d_r + p_u·M, seconds.
    pub fn expected_downtime_s(&self, manual_repair_s: f64) -> f64 {
        self.p_in_place * self.d_in_place_s
            + self.p_restart * self.d_restart_s
            + self.p_unrestored * manual_repair_s
    }
}

/// The model's result for one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    /// The profile.
    pub profile: KernelProfile,
    /// E[D_c] per class, s.
    pub per_class_s: BTreeMap<FaultClass, f64>,
    /// Each class's part of E[D], m_c·E[D_c] (m normalised), s.
    pub share_s: BTreeMap<FaultClass, f64>,
    /// Mix classes without runs under this profile (then no result).
    pub missing: Vec<FaultClass>,
    /// E[D], s (`None` when classes are missing).
    pub expected_downtime_s: Option<f64>,
    /// A.
    pub availability: Option<f64>,
    /// (1 − A) · year, s.
    pub downtime_per_year_s: Option<f64>,
    /// Restarts per year: λ·A·Σ m_c p_r,c.
    pub restarts_per_year: Option<f64>,
}

/// The model over every profile of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Per profile, report order.
    pub profiles: Vec<ProfileResult>,
}

/// A = 1 / (1 + λ·E[D]) with λ per year and E[D] in seconds.
pub fn availability(faults_per_year: f64, expected_downtime_s: f64) -> f64 {
    1.0 / (1.0 + faults_per_year / YEAR_S * expected_downtime_s)
}

/// The model for one profile from per-class inputs.
pub fn evaluate(
    profile: KernelProfile,
    inputs: &BTreeMap<FaultClass, ClassInputs>,
    p: &Params,
) -> ProfileResult {
    let total: f64 = p.mix.iter().map(|(_, w)| w).sum();
    let mut per_class_s = BTreeMap::new();
    let mut share_s = BTreeMap::new();
    let mut missing = Vec::new();
    let (mut ed, mut restarts) = (0.0, 0.0);
    for &(class, w) in &p.mix {
        if w <= 0.0 {
            continue;
        }
        match inputs.get(&class) {
            Some(i) => {
                let d = i.expected_downtime_s(p.manual_repair_s);
                per_class_s.insert(class, d);
                share_s.insert(class, w / total * d);
                ed += w / total * d;
                restarts += w / total * i.p_restart;
            }
            None => missing.push(class),
        }
    }
    let complete = missing.is_empty();
    let a = complete.then(|| availability(p.faults_per_year, ed));
    ProfileResult {
        profile,
        per_class_s,
        share_s,
        missing,
        expected_downtime_s: complete.then_some(ed),
        availability: a,
        downtime_per_year_s: a.map(|a| (1.0 - a) * YEAR_S),
        restarts_per_year: a.map(|a| p.faults_per_year * a * restarts),
    }
}

/// The model for every profile the report has runs of.
pub fn from_report(r: &Report, p: &Params) -> Table {
    let mut profiles = Vec::new();
    for &profile in KernelProfile::ALL {
        let inputs: BTreeMap<FaultClass, ClassInputs> = r
            .classes
            .iter()
            .filter_map(|c| {
                let h = c.healing.get(profile.name())?;
                Some((c.class, ClassInputs::from_healing(h)?))
            })
            .collect();
        if inputs.is_empty() {
            continue;
        }
        profiles.push(evaluate(profile, &inputs, p));
    }
    Table { profiles }
}

fn duration(s: f64) -> String {
    match s {
        s if s >= 3600.0 => format!("{:.1} h", s / 3600.0),
        s if s >= 60.0 => format!("{:.1} min", s / 60.0),
        s => format!("{s:.1} s"),
    }
}

/// The table as Markdown.
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
         a fault nothing restored costs M = {}.\n",
        p.faults_per_year,
        mix.join(", "),
        duration(p.manual_repair_s)
    );
    let _ = writeln!(
        s,
        "| profile | E[downtime per fault] | availability | downtime per year | restarts per year | classes without runs |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in &t.profiles {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.profile.name(),
            r.expected_downtime_s.map_or("—".into(), duration),
            r.availability
                .map_or("—".into(), |a| format!("{:.6} %", a * 100.0)),
            r.downtime_per_year_s.map_or("—".into(), duration),
            r.restarts_per_year
                .map_or("—".into(), |n| format!("{n:.1}")),
            if r.missing.is_empty() {
                "none".to_string()
            } else {
                r.missing
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    let _ = writeln!(s, "\nE[downtime] of one fault, per class:\n");
    let names: Vec<&str> = t.profiles.iter().map(|r| r.profile.name()).collect();
    let _ = writeln!(s, "| class | weight | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---|".repeat(names.len()));
    for (c, w) in &p.mix {
        let cells: Vec<String> = t
            .profiles
            .iter()
            .map(|r| r.per_class_s.get(c).map_or("—".into(), |d| duration(*d)))
            .collect();
        let _ = writeln!(
            s,
            "| {c} | {:.0}% | {} |",
            w / total * 100.0,
            cells.join(" | ")
        );
    }
    s
}

/// Downtime per year per profile as a bar chart, each bar split by class
/// (the class's share of E[D]).
pub fn svg(t: &Table) -> String {
    const COLORS: &[&str] = &[
        "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
        "#1f78b4", "#b2df8a",
    ];
    let (left, top, bar_w, gap, plot_h) = (90.0, 40.0, 60.0, 50.0, 300.0);
    let n = t.profiles.len().max(1) as f64;
    let width = left + n * (bar_w + gap) + 220.0;
    let height = top + plot_h + 70.0;
    let max = t
        .profiles
        .iter()
        .filter_map(|r| r.downtime_per_year_s)
        .fold(1.0_f64, f64::max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="13">Expected downtime per year, by profile (split by fault class)</text>"#
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
            duration(v)
        );
    }
    let classes: Vec<FaultClass> = FaultClass::ALL.to_vec();
    for (i, r) in t.profiles.iter().enumerate() {
        let x = left + gap / 2.0 + i as f64 * (bar_w + gap);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + bar_w / 2.0,
            top + plot_h + 16.0,
            r.profile.name()
        );
        let (Some(total), Some(ed)) = (r.downtime_per_year_s, r.expected_downtime_s) else {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no result</text>"#,
                x + bar_w / 2.0,
                top + plot_h - 4.0
            );
            continue;
        };
        let mut y = top + plot_h;
        // Each class's part of the bar: m_c·E[D_c] over E[D].
        for (&c, part) in &r.share_s {
            let share = if ed > 0.0 { part / ed } else { 0.0 };
            let h = plot_h * total / max * share;
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
                duration(total * share)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + bar_w / 2.0,
            y - 4.0,
            duration(total)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-computed case of docs/availability.md.
    #[test]
    fn the_model_matches_a_hand_computed_case() {
        // Class A: always restored in place in 10 s. Class B: half restarted
        // (60 s), half never restored (M = 1 h).
        let a = ClassInputs {
            runs: 10,
            p_in_place: 1.0,
            p_restart: 0.0,
            p_unrestored: 0.0,
            d_in_place_s: 10.0,
            d_restart_s: 0.0,
        };
        let b = ClassInputs {
            runs: 10,
            p_in_place: 0.0,
            p_restart: 0.5,
            p_unrestored: 0.5,
            d_in_place_s: 0.0,
            d_restart_s: 60.0,
        };
        assert_eq!(a.expected_downtime_s(3600.0), 10.0);
        assert_eq!(b.expected_downtime_s(3600.0), 1830.0);
        let params = Params {
            faults_per_year: 12.0,
            mix: vec![(FaultClass::MemHog, 1.0), (FaultClass::DState, 1.0)],
            manual_repair_s: 3600.0,
        };
        let inputs = BTreeMap::from([(FaultClass::MemHog, a), (FaultClass::DState, b)]);
        let r = evaluate(KernelProfile::Restart, &inputs, &params);
        // E[D] = ½·10 + ½·1830 = 920 s. E[U] = year/12 = 2 629 800 s.
        // A = 2 629 800 / (2 629 800 + 920) = 0.999 650 27…
        // Downtime per year = (1 − A)·31 557 600 s = 920·31 557 600/2 630 720
        //                   = 11 036.14 s (3.07 h).
        assert_eq!(r.expected_downtime_s, Some(920.0));
        let avail = r.availability.unwrap();
        assert!((avail - 2_629_800.0 / 2_630_720.0).abs() < 1e-12, "{avail}");
        let dt = r.downtime_per_year_s.unwrap();
        assert!((dt - 11_036.14).abs() < 0.01, "{dt}");
        // Restarts per year: λ·A·Σ m p_r = 12 · A · ¼.
        assert!((r.restarts_per_year.unwrap() - 3.0 * avail).abs() < 1e-9);
        // A class of the mix without runs: no result, and it is named.
        let r = evaluate(
            KernelProfile::None,
            &BTreeMap::from([(FaultClass::MemHog, a)]),
            &params,
        );
        assert_eq!(r.missing, [FaultClass::DState]);
        assert_eq!(r.availability, None);
    }

    #[test]
    fn mixes_parse_and_bad_ones_are_explained() {
        let m = parse_mix(&["mem_hog=2,d_state=1".into()]).unwrap();
        assert_eq!(m, [(FaultClass::MemHog, 2.0), (FaultClass::DState, 1.0)]);
        for (bad, says) in [
            ("mem_hog", "class=weight"),
            ("nope=1", "nope"),
            ("mem_hog=-1", "≥ 0"),
            ("mem_hog=0", "zero"),
        ] {
            let e = parse_mix(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let total: f64 = default_mix().iter().map(|(_, w)| w).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(default_mix().len(), FaultClass::ALL.len());
    }
}
