//! node-problem-detector's system log monitor, as it treats selfheal's
//! event log (packaging/kubernetes/selfheal-monitor.json): the filelog
//! translator (timestamp and message regular expressions, a Go time
//! layout) and rule matching (pattern + `\z` on the message). Go's regexp
//! and the regex crate both implement RE2 syntax.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use regex::Regex;

/// Go's time.RFC3339, the only layout this emulation accepts.
const GO_RFC3339: &str = "2006-01-02T15:04:05Z07:00";

/// The monitor config shipped in packaging/kubernetes.
pub fn monitor_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/kubernetes/selfheal-monitor.json")
}

/// One NPD rule.
pub struct Rule {
    /// `temporary` (an Event) or `permanent` (a NodeCondition).
    pub kind: String,
    /// The condition a permanent rule sets.
    pub condition: Option<String>,
    /// The Event or condition reason.
    pub reason: String,
    re: Regex,
}

/// What NPD makes of one line.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Dropped by skipList before any regex.
    Skipped,
    /// Translated; these rules matched: (reason, condition for permanent).
    Matched(Vec<(String, Option<String>)>),
}

/// The monitor, compiled.
pub struct Monitor {
    timestamp: Regex,
    message: Regex,
    skip: Vec<String>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

impl Monitor {
    /// Loads and compiles `path` (panics with the reason on a bad config).
    pub fn load(path: &Path) -> Monitor {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let pc = &v["pluginConfig"];
        assert_eq!(v["plugin"], "filelog");
        assert_eq!(
            pc["timestampFormat"], GO_RFC3339,
            "this emulation knows Go's RFC3339 layout only"
        );
        let rules = v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Rule {
                kind: r["type"].as_str().unwrap().to_string(),
                condition: r["condition"].as_str().map(str::to_string),
                reason: r["reason"].as_str().unwrap().to_string(),
                // NPD: regexp.Compile(expr + `\z`).
                re: Regex::new(&format!("{}\\z", r["pattern"].as_str().unwrap()))
                    .unwrap_or_else(|e| panic!("rule {}: {e}", r["reason"])),
            })
            .collect();
        Monitor {
            timestamp: Regex::new(pc["timestamp"].as_str().unwrap()).unwrap(),
            message: Regex::new(pc["message"].as_str().unwrap()).unwrap(),
            skip: v["skipList"]
                .as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default(),
            rules,
        }
    }

    /// The translator: (timestamp, message), the last submatch of each, or
    /// why NPD would drop the line.
    pub fn translate(&self, line: &str) -> Result<(String, String), String> {
        let last = |re: &Regex, what: &str| {
            let c = re.captures(line).ok_or(format!("no {what} in {line:?}"))?;
            Ok::<String, String>(
                c.iter()
                    .flatten()
                    .last()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
            )
        };
        let ts = last(&self.timestamp, "timestamp")?;
        // What Go's time.Parse(time.RFC3339, ts) accepts (fractional
        // seconds are allowed after the seconds even though the layout has
        // none).
        let shape = Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
            .unwrap();
        if !shape.is_match(&ts) || humantime::parse_rfc3339(&ts).is_err() {
            return Err(format!("timestamp {ts:?} does not parse as RFC 3339"));
        }
        Ok((ts, last(&self.message, "message")?))
    }

    /// What NPD does with one event-log line.
    pub fn outcome(&self, line: &str) -> Result<Outcome, String> {
        if self.skip.iter().any(|s| line.contains(s.as_str())) {
            return Ok(Outcome::Skipped);
        }
        let (_, message) = self.translate(line)?;
        Ok(Outcome::Matched(
            self.rules
                .iter()
                .filter(|r| r.re.is_match(&message))
                .map(|r| (r.reason.clone(), r.condition.clone()))
                .collect(),
        ))
    }

    /// The reasons matched by `line` (empty when skipped or unmatched).
    pub fn reasons(&self, line: &str) -> Vec<String> {
        match self.outcome(line) {
            Ok(Outcome::Matched(m)) => m.into_iter().map(|(r, _)| r).collect(),
            Ok(Outcome::Skipped) => vec![],
            Err(e) => panic!("NPD would drop this line: {e}"),
        }
    }
}
