//! `selfheal generate man|completions DIR` (hidden): files derived from
//! the command-line definition, for packages (scripts/package).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use clap_complete::Shell;

/// What to generate.
#[derive(Debug, Subcommand)]
pub enum GenerateAction {
    /// Man pages: selfheal.1 and one per subcommand (selfheal-watch.1, …).
    Man {
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
    /// Shell completions: selfheal.bash, _selfheal (zsh), selfheal.fish.
    Completions {
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
}

/// Extra sections of selfheal(1), in roff: what `--help` cannot say.
const MAIN_PAGE_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
success
.TP
\fB1\fR
runtime failure (a store that cannot be opened, no daemon answering)
.TP
\fB2\fR
bad input: command line or configuration
.PP
\fBselfheal run\fR exits with the supervised program's status (128 + N for signal N).
.SH FILES
.TP
\fI/etc/selfheal/config.toml\fR
the packaged daemon's configuration (\fBselfheal config default\fR prints every key;
\fBselfheal config check\fR validates a file)
.TP
\fI/var/lib/selfheal/selfheal.db\fR
the event store (SQLite) when running as root
.TP
\fI$XDG_STATE_HOME/selfheal/selfheal.db\fR
the event store for other users
.SH "SEE ALSO"
\fBsystemd.service\fR(5), \fBjournalctl\fR(1)
"#;

/// Writes the requested files.
pub fn run(action: GenerateAction, cmd: clap::Command) -> anyhow::Result<ExitCode> {
    match action {
        GenerateAction::Man { dir } => {
            create(&dir)?;
            // As generate_to does: no `help` subcommand page to refer to.
            let mut cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            clap_mangen::generate_to(cmd.clone(), &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            // The main page again, with exit codes and files appended.
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            page.extend_from_slice(MAIN_PAGE_EXTRA.as_bytes());
            let main = dir.join("selfheal.1");
            std::fs::write(&main, page).with_context(|| format!("writing {}", main.display()))?;
        }
        GenerateAction::Completions { dir } => {
            create(&dir)?;
            let mut cmd = cmd;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cmd, "selfheal", &dir)
                    .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
