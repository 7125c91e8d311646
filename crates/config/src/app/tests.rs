//! Tests of `[[app]]` parsing and validation.

use super::*;
use crate::{Config, ConfigError};
use std::path::Path;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("apps.toml"))
}

fn invalid(text: &str) -> (usize, String) {
    match parse(text).unwrap_err() {
        ConfigError::Invalid { line, message, .. } => (line, message),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn minimal_app_gets_defaults() {
    let c = parse("[[app]]\nname = \"web\"\ncommand = [\"/bin/web\", \"-v\"]\n").unwrap();
    assert_eq!(
        c.apps,
        vec![AppConfig::new("web", vec!["/bin/web".into(), "-v".into()])]
    );
    assert_eq!(c.apps[0].restart, RestartPolicy::OnFailure);
    assert_eq!(c.apps[0].parent_death_signal, Some(SignalName::kill()));
    // Checkpoints are off unless an interval is given.
    assert!(!c.apps[0].checkpoint.enabled());
    let c =
        parse("[[app]]\nname = \"w\"\ncommand = [\"w\"]\n[app.checkpoint]\ninterval = \"100ms\"\n")
            .unwrap();
    let ck = &c.apps[0].checkpoint;
    assert!(ck.enabled());
    assert_eq!((ck.keep, ck.max_rollbacks, ck.full_copy), (8, 10, false));
    assert!(ck.precopy, "pre-copy is on by default");
    assert!(ck.files, "file tracking is on by default");
    assert_eq!(c.apps[0].restart_output, RestartOutput::Truncate);
}

#[test]
fn full_app_round_trips() {
    let text = r#"
[[app]]
name = "api"
command = ["/srv/api", "--port", "8080"]
cwd = "/srv"
env = { RUST_LOG = "info" }
restart = "always"
restart_output = "rotate"
stdout = "/var/log/api.out"
stderr = "null"
stderr_tail_lines = 5
stop_signal = "int"
stop_grace = "3s"
kill_mode = "process"
parent_death_signal = "none"
backoff = { initial = "50ms", max = "5s", multiplier = 3.0 }
crash_loop = { max_restarts = 2, window = "10s", healthy_after = "20s", retry_after = "1m" }
notify = { enabled = true, ready_timeout = "5s", watchdog = "2s", access = "all" }
progress = { spin = "10s", deadlock = "5s", blocked_waits = "any", period = "200ms", act_alone = true }
hook = { command = ["/srv/api-dump"], timeout = "2s", thread_stacks = false }
checkpoint = { interval = "50ms", keep = 16, recurrence_window = "2s", max_rollbacks = 3, full_copy = true, precopy = false, files = false }

[[app.probe]]
http = "http://127.0.0.1:8080/healthz"
expect_status = "200"
period = "1s"
timeout = "300ms"
failure_threshold = 2

[[app.probe]]
name = "port"
tcp = "127.0.0.1:8080"
"#;
    let c = parse(text).unwrap();
    let a = &c.apps[0];
    assert_eq!(a.stop_signal.as_str(), "SIGINT");
    assert_eq!(a.restart_output, RestartOutput::Rotate);
    assert!(!a.checkpoint.files);
    assert_eq!(a.stdout, Output::File("/var/log/api.out".into()));
    assert_eq!(a.stderr, Output::Null);
    assert_eq!(a.parent_death_signal, None);
    assert_eq!(a.probes.len(), 2);
    assert_eq!(a.probes[0].name, "http");
    assert_eq!(a.probes[0].failure_threshold, 2);
    assert!(
        matches!(&a.probes[0].check, ProbeCheck::Http { expect_status, .. } if expect_status.contains(200) && !expect_status.contains(204))
    );
    assert_eq!(
        a.probes[1].check,
        ProbeCheck::Tcp {
            address: "127.0.0.1:8080".into()
        }
    );
    assert!(a.progress.enabled() && a.progress.act_alone);
    assert!(a.checkpoint.enabled() && a.checkpoint.full_copy && !a.checkpoint.precopy);
    assert_eq!(a.checkpoint.interval.get(), Duration::from_millis(50));
    assert_eq!((a.checkpoint.keep, a.checkpoint.max_rollbacks), (16, 3));
    assert_eq!(a.checkpoint.recurrence_window.get(), Duration::from_secs(2));
    a.validate().unwrap();
    // What serializes parses back to the same thing.
    let back = parse(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn app_errors_point_at_the_text() {
    let (line, msg) = invalid("[[app]]\nname = \"a b\"\ncommand = [\"x\"]\n");
    assert_eq!(line, 2);
    assert!(msg.contains("invalid app name"), "{msg}");

    let (line, msg) = invalid("[[app]]\nname = \"a\"\ncommand = []\n");
    assert_eq!(line, 3);
    assert!(msg.contains("command is empty"), "{msg}");

    let (_, msg) = invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nrestart = \"sometimes\"\n");
    assert!(msg.contains("on-failure"), "{msg}");

    let (line, msg) =
        invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nrestart_output = \"erase\"\n");
    assert_eq!(line, 4);
    assert!(msg.contains("truncate") && msg.contains("rotate"), "{msg}");

    let (line, msg) =
        invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nstop_signal = \"SIGNOPE\"\n");
    assert_eq!(line, 4);
    assert!(msg.contains("unknown signal"), "{msg}");

    let (_, msg) =
        invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\n[[app.probe]]\nhttp = \"https://x/\"\n");
    assert!(msg.contains("HTTPS") && msg.contains("TLS"), "{msg}");

    let (_, msg) = invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\n[[app.probe]]\ntcp = \"h:1\"\nhttp = \"http://h/\"\n");
    assert!(msg.contains("exactly one"), "{msg}");

    let (_, msg) =
        invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\n[[app.probe]]\ntcp = \"localhost\"\n");
    assert!(msg.contains("HOST:PORT"), "{msg}");

    let (_, msg) = invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\n[[app.probe]]\nhttp = \"http://h/\"\nexpect_status = \"400-200\"\n");
    assert!(msg.contains("status range"), "{msg}");

    let (_, msg) =
        invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nbackoff = { multiplier = 0.5 }\n");
    assert!(msg.contains("1.0"), "{msg}");

    let (_, msg) =
        invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nprogress = { period = \"1ms\" }\n");
    assert!(msg.contains("20ms"), "{msg}");

    let (line, msg) =
        invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\n[app.checkpoint]\ninterval = \"1ms\"\n");
    assert_eq!(line, 5);
    assert!(msg.contains("10ms to 60s"), "{msg}");
    let (line, msg) = invalid(
        "[[app]]\nname = \"a\"\ncommand = [\"x\"]\n[app.checkpoint]\ninterval = \"50ms\"\nkeep = 0\n",
    );
    assert_eq!(line, 6);
    assert!(msg.contains("1 to 256"), "{msg}");
    let (_, msg) = invalid(
        "[[app]]\nname = \"a\"\ncommand = [\"x\"]\ncheckpoint = { recurrence_window = \"0\" }\n",
    );
    assert!(msg.contains("recurrence_window"), "{msg}");
    let (_, msg) =
        invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\ncheckpoint = { every = \"1s\" }\n");
    assert!(msg.contains("unknown field `every`"), "{msg}");

    let (_, msg) = invalid("[[app]]\nname = \"a\"\ncommand = [\"x\"]\nwatchdog = \"1s\"\n");
    assert!(msg.contains("unknown field `watchdog`"), "{msg}");

    let (_, msg) = invalid(
        "[[app]]\nname = \"a\"\ncommand = [\"x\"]\n[[app]]\nname = \"a\"\ncommand = [\"y\"]\n",
    );
    assert!(msg.contains("defined twice"), "{msg}");
}

#[test]
fn commented_example_in_default_toml_parses() {
    let text = crate::DEFAULT_CONFIG_TOML;
    let start = text
        .find("# [[app]]")
        .expect("the default config shows an [[app]] example");
    let end = text[start..]
        .find("\n# ---")
        .map_or(text.len(), |i| start + i);
    let example: String = text[start..end]
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .or_else(|| l.strip_prefix('#'))
                .unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = parse(&example).unwrap();
    assert_eq!(c.apps.len(), 1);
    assert!(c.apps[0].notify.enabled);
    assert_eq!(c.apps[0].probes.len(), 1);
    assert!(c.apps[0].checkpoint.enabled());
    c.apps[0].validate().unwrap();
}

#[test]
fn signal_names() {
    assert_eq!("term".parse::<SignalName>().unwrap().as_str(), "SIGTERM");
    assert_eq!("SIGUSR1".parse::<SignalName>().unwrap().as_str(), "SIGUSR1");
    assert_eq!("34".parse::<SignalName>().unwrap().as_str(), "34");
    assert!("0".parse::<SignalName>().is_err() && "65".parse::<SignalName>().is_err());
}

#[test]
fn validate_catches_what_flags_can_get_wrong() {
    let mut a = AppConfig::new("ok", vec!["true".into()]);
    a.validate().unwrap();
    a.probes.push(ProbeConfig::new(ProbeCheck::Http {
        url: "ftp://x".into(),
        expect_status: StatusRange::default(),
    }));
    assert_eq!(
        a.validate().unwrap_err().to_string(),
        "app `ok`: `ftp://x` is not an http:// URL; write it like \"http://127.0.0.1:8080/healthz\""
    );
    let b = AppConfig::new("", vec!["true".into()]);
    assert!(matches!(b.validate(), Err(SettingError::Name(_))));
    let mut c = AppConfig::new("ck", vec!["true".into()]);
    c.checkpoint.interval = HumanDuration::from_millis(5);
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "app `ck`: checkpoint interval 5ms is out of range; use 10ms to 60s, or \"0\" for no checkpoints"
    );
    c.checkpoint.interval = HumanDuration::from_millis(50);
    c.checkpoint.keep = 1000;
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "app `ck`: checkpoint keep = 1000 is out of range; use 1 to 256 (default 8)"
    );
    // Printed as an error chain, the app's context must not repeat the
    // message it already holds.
    let e = c.validate().unwrap_err();
    assert!(std::error::Error::source(&e).is_none(), "{e:?}");
    c.checkpoint.keep = 8;
    c.stderr_tail_lines = 5000;
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "app `ck`: stderr_tail_lines = 5000 is out of range; use 0 to 1000"
    );
}
