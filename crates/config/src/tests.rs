use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

fn invalid(text: &str) -> (usize, usize, String) {
    match parse(text).unwrap_err() {
        ConfigError::Invalid {
            line,
            column,
            message,
            ..
        } => (line, column, message),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn default_text_matches_code() {
    let parsed = parse(DEFAULT_CONFIG_TOML).unwrap();
    let expected = Config {
        rules: default_rules(),
        ..Config::default()
    };
    assert_eq!(parsed, expected);
    assert_eq!(parsed.effective_rules(), default_rules());
}

#[test]
fn empty_file_is_all_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.effective_rules().len(), default_rules().len());
    assert_eq!(
        c.daemon.listen.unwrap().to_string(),
        "127.0.0.1:9469".to_string()
    );
}

#[test]
fn unknown_key_has_line_and_column() {
    let (line, col, msg) = invalid("[daemon]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
    assert_eq!((line, col), (3, 1));
    assert!(msg.contains("unknown field `lisen`"), "{msg}");
}

#[test]
fn bad_values_point_at_the_value() {
    let (line, col, msg) = invalid("[sampler]\nperiod = \"5ms\"\n");
    assert_eq!((line, col), (2, 10));
    assert!(msg.contains("10ms to 60s"), "{msg}");

    let (line, _, msg) = invalid("[sampler]\nperiod = 100\n");
    assert_eq!(line, 2);
    assert!(msg.contains("100ms"), "{msg}");

    let (_, _, msg) = invalid("[light]\nrealtime_priority = 120\n");
    assert!(msg.contains("1 to 99"), "{msg}");

    let (_, _, msg) = invalid("[daemon]\nlisten = \"localhost\"\n");
    assert!(msg.contains("IP:PORT"), "{msg}");

    let (_, _, msg) = invalid("[daemon]\nlog_format = \"xml\"\n");
    assert!(msg.contains("human") && msg.contains("json"), "{msg}");
}

#[test]
fn rule_errors() {
    let (line, _, msg) =
        invalid("[[rule]]\nname = \"x\"\nwhen = [{ metric = \"cpu_sys\", above = 1 }]\n");
    assert_eq!(line, 3);
    assert!(
        msg.contains("unknown metric `cpu_sys`") && msg.contains("cpu_system_percent"),
        "{msg}"
    );

    let (_, _, msg) = invalid(
        "[[rule]]\nname = \"x\"\nwhen = [{ metric = \"cpu_user_percent\", above = 1, below = 2 }]\n",
    );
    assert!(msg.contains("exactly one"), "{msg}");

    let (_, _, msg) = invalid(
        "[[rule]]\nname = \"x\"\nwhen = [{ metric = \"cpu_user_percent\", above = 120 }]\n",
    );
    assert!(msg.contains("0..=100"), "{msg}");

    let (_, _, msg) = invalid(
        "[[rule]]\nname = \"x\"\nwhen = [{ metric = \"cpu_user_percent\", above = 1 }, { metric = \"runnable_tasks\", above = 2 }]\n",
    );
    assert!(msg.contains("share a scope"), "{msg}");

    let (_, _, msg) = invalid("[[rule]]\nname = \"custom\"\nlevel = \"light\"\n");
    assert!(msg.contains("needs `when"), "{msg}");

    let err = parse(
        "[[rule]]\nname = \"a\"\nwhen = [{ metric = \"runnable_tasks\", above = 2 }]\n[[rule]]\nname = \"a\"\nwhen = [{ metric = \"runnable_tasks\", above = 3 }]\n",
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::DuplicateRule { .. }), "{err}");
}

#[test]
fn rules_merge_by_name() {
    let c = parse(
        "[[rule]]\nname = \"kernel_spin\"\nsustain = \"500ms\"\n\
         [[rule]]\nname = \"swap_storm\"\nenabled = false\n\
         [[rule]]\nname = \"forks\"\nlevel = \"heavy\"\nwhen = [{ metric = \"forks_per_second\", above = 5000 }]\n",
    )
    .unwrap();
    let rules = c.effective_rules();
    let spin = rules.iter().find(|r| r.name == "kernel_spin").unwrap();
    assert_eq!(spin.sustain, HumanDuration::from_millis(500));
    assert_eq!(spin.when.len(), 2, "conditions kept from the default");
    assert!(rules.iter().all(|r| r.name != "swap_storm"));
    let forks = rules.iter().find(|r| r.name == "forks").unwrap();
    assert_eq!(forks.level, Level::Heavy);
    assert_eq!(rules.len(), default_rules().len());

    let only = parse("[light]\ndefault_rules = false\n").unwrap();
    assert!(only.effective_rules().is_empty());
}

#[test]
fn include_merges_rule_fragments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cal.toml"),
        "[[rule]]\nname = \"run_queue_long\"\nwhen = [{ metric = \"runnable_tasks_per_cpu\", above = 6.5 }]\n",
    )
    .unwrap();
    let main = dir.path().join("main.toml");
    std::fs::write(&main, "include = [\"cal.toml\"]\n").unwrap();
    let c = Config::load(&main).unwrap();
    let r = c
        .effective_rules()
        .into_iter()
        .find(|r| r.name == "run_queue_long")
        .unwrap();
    assert_eq!(r.when[0].threshold, 6.5);
    assert_eq!(
        r.sustain,
        HumanDuration::from_millis(200),
        "sustain kept from default"
    );

    // Includes may only hold rules.
    std::fs::write(dir.path().join("bad.toml"), "[daemon]\ndry_run = true\n").unwrap();
    std::fs::write(&main, "include = [\"bad.toml\"]\n").unwrap();
    let err = Config::load(&main).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml") && err.contains("only contain [[rule]]"),
        "{err}"
    );

    std::fs::write(&main, "include = [\"missing.toml\"]\n").unwrap();
    let err = Config::load(&main).unwrap_err().to_string();
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn unreadable_file_names_path() {
    let err = Config::load(Path::new("/nonexistent/selfheal.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/selfheal.toml"), "{err}");
}

#[test]
fn serialized_config_parses_back() {
    let c = Config {
        rules: default_rules(),
        ..Config::default()
    };
    let text = toml::to_string(&c).unwrap();
    let back = parse(&text).unwrap();
    assert_eq!(back, c);
}

#[test]
fn value_errors_are_typed_with_the_same_messages() {
    use std::error::Error as _;
    let e = parse_listen("nope:80").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid listen address `nope:80`; write IP:PORT like \"127.0.0.1:9469\" or \"[::1]:9469\", or \"\" to disable HTTP"
    );
    assert!(e.source().is_some(), "the address parser's error is kept");
    assert_eq!(parse_listen(" off ").unwrap(), None);
    assert_eq!(
        "sometimes".parse::<RestartPolicy>().unwrap_err(),
        RestartPolicyError {
            input: "sometimes".into()
        }
    );
    assert_eq!(
        "sometimes"
            .parse::<RestartPolicy>()
            .unwrap_err()
            .to_string(),
        "unknown restart policy `sometimes`; use never, on-failure or always"
    );
    assert_eq!(
        "wipe".parse::<RestartOutput>().unwrap_err().to_string(),
        "unknown restart_output `wipe`; use truncate, keep or rotate"
    );
    assert_eq!(
        "".parse::<Output>().unwrap_err().to_string(),
        "empty output; use \"inherit\", \"null\" or the path of a log file"
    );
    assert_eq!(
        "SIGNOPE".parse::<SignalName>().unwrap_err().to_string(),
        "unknown signal `SIGNOPE`; write a name like \"SIGTERM\" or \"SIGINT\", or a number 1 to 64"
    );
    // The config file reports the same text at the offending value.
    let (_, _, message) = invalid("[daemon]\nlisten = \"nope:80\"\n");
    assert!(
        message.contains("invalid listen address `nope:80`"),
        "{message}"
    );
}
