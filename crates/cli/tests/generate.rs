//! `selfheal generate man|completions DIR`: what the package ships.

mod common;

use common::run;

#[test]
fn man_pages_cover_every_visible_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("man");
    let (code, _, err) = run(&["generate", "man", d.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for page in [
        "selfheal.1",
        "selfheal-watch.1",
        "selfheal-events.1",
        "selfheal-status.1",
        "selfheal-config.1",
        "selfheal-config-check.1",
        "selfheal-config-default.1",
        "selfheal-calibrate.1",
        "selfheal-run.1",
    ] {
        let text = std::fs::read_to_string(d.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }
    // The hidden subcommand and the help pseudo-command get no page.
    assert!(!d.join("selfheal-generate.1").exists());
    assert!(!d.join("selfheal-help.1").exists());
    let main = std::fs::read_to_string(d.join("selfheal.1")).unwrap();
    assert!(main.contains("EXIT STATUS") && main.contains("/etc/selfheal/config.toml"));
    assert!(
        !main.contains("selfheal\\-help"),
        "refers to a page that does not exist"
    );
    let watch = std::fs::read_to_string(d.join("selfheal-watch.1")).unwrap();
    assert!(watch.contains("log\\-format"), "{watch}");
}

#[test]
fn completions_for_bash_zsh_fish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, err) = run(&["generate", "completions", d.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let bash = std::fs::read_to_string(d.join("selfheal.bash")).unwrap();
    assert!(bash.contains("complete") && bash.contains("--log-format"));
    assert!(std::fs::read_to_string(d.join("_selfheal"))
        .unwrap()
        .contains("#compdef selfheal"));
    assert!(std::fs::read_to_string(d.join("selfheal.fish"))
        .unwrap()
        .contains("complete -c selfheal"));
    // If bash is here, the script must at least parse.
    if let Ok(out) = std::process::Command::new("bash")
        .arg("-n")
        .arg(d.join("selfheal.bash"))
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn generate_is_hidden_from_help() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(!out.contains("generate"), "{out}");
}

#[test]
fn generate_into_an_unwritable_place_fails_clearly() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let target = f.path().join("sub");
    let (code, _, err) = run(&["generate", "man", target.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(target.to_str().unwrap()), "{err}");
}
