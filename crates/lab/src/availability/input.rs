//! The model's command-line inputs: the class mix, the fault rate and the
//! durations, each checked with a message that names the flag and the fix.

use crate::scenario::FaultClass;

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
    #[error("--mix `{0}`: the weight must be a number ≥ 0, e.g. mem_hog=0.25")]
    Weight(String),
    /// A class given twice.
    #[error("--mix: class `{0}` is given twice; give each class once")]
    Twice(FaultClass),
    /// All weights zero.
    #[error("--mix: the weights sum to zero; give at least one class a weight > 0")]
    Empty,
}

/// Parses `class=weight` items (each may hold several, comma-separated).
pub fn parse_mix(items: &[String]) -> Result<Vec<(FaultClass, f64)>, MixError> {
    let mut out: Vec<(FaultClass, f64)> = Vec::new();
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
        if out.iter().any(|(c, _)| *c == class) {
            return Err(MixError::Twice(class));
        }
        out.push((class, w));
    }
    if out.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
        return Err(MixError::Empty);
    }
    Ok(out)
}

/// A rate or duration flag that is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// Not a positive number.
    #[error("--faults-per-year `{0}`: must be a number > 0 (faults per machine per year of uptime), e.g. 12")]
    Rate(String),
    /// Not a duration ≥ 0.
    #[error("{flag} `{text}`: must be a duration ≥ 0, in seconds (120) or with a unit (2m, 1h)")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// What was given.
        text: String,
    },
}

/// λ from `--faults-per-year`.
pub fn positive_rate(text: &str) -> Result<f64, ParamError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| ParamError::Rate(text.to_string()))
}

/// Seconds from `flag`'s value: a plain number of seconds, or a humantime
/// duration (`90s`, `2m`, `1h`).
pub fn parse_seconds(flag: &'static str, text: &str) -> Result<f64, ParamError> {
    let bad = || ParamError::Duration {
        flag,
        text: text.to_string(),
    };
    let t = text.trim();
    match t.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        Ok(_) => Err(bad()),
        Err(_) => humantime::parse_duration(t)
            .map(|d| d.as_secs_f64())
            .map_err(|_| bad()),
    }
}
