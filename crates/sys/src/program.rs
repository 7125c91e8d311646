//! What program to start: the one description that both launchers take —
//! the plain one (`selfheal-supervise`'s `ProcessChild`) and the traced one
//! (`selfheal-checkpoint`'s `launch`). Each launcher wraps it with the
//! options only it has (a parent-death signal, checkpointing's THP and
//! tracer-exit settings); [`crate::ptrace::SpawnSpec`] is the lowered form
//! the traced launcher builds from it just before `fork`.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Where one of the program's standard streams goes.
#[derive(Debug, Default)]
pub enum StdioSpec {
    /// The caller's own descriptor.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// This descriptor (a pipe end or an opened log file).
    Fd(OwnedFd),
}

impl StdioSpec {
    /// A copy that can be handed to another launcher while this one stays
    /// usable (the descriptor is duplicated).
    pub fn try_clone(&self) -> std::io::Result<StdioSpec> {
        Ok(match self {
            StdioSpec::Inherit => StdioSpec::Inherit,
            StdioSpec::Null => StdioSpec::Null,
            StdioSpec::Fd(fd) => StdioSpec::Fd(fd.try_clone()?),
        })
    }
}

/// A program to start.
#[derive(Debug, Default)]
pub struct Program {
    /// Program and arguments; searched in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Variables added to (or replacing) the caller's environment.
    pub env: Vec<(String, String)>,
    /// Working directory, if not the caller's.
    pub cwd: Option<PathBuf>,
    /// stdin, stdout, stderr.
    pub stdio: [StdioSpec; 3],
    /// Start it as the leader of a new process group.
    pub new_process_group: bool,
    /// `cgroup.procs` files the program joins before it runs one
    /// instruction (a sandbox).
    pub cgroup_procs: Vec<PathBuf>,
}

impl Program {
    /// `argv` with everything else left at its default.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Program {
        Program {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Program::default()
        }
    }

    /// A copy for another launcher (descriptors duplicated), so this one
    /// stays usable, e.g. for a fallback launch.
    pub fn try_clone(&self) -> std::io::Result<Program> {
        let [i, o, e] = &self.stdio;
        Ok(Program {
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            stdio: [i.try_clone()?, o.try_clone()?, e.try_clone()?],
            new_process_group: self.new_process_group,
            cgroup_procs: self.cgroup_procs.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_clone_has_its_own_descriptors() {
        let (r, _w) = std::io::pipe().unwrap();
        let p = Program {
            env: vec![("A".into(), "1".into())],
            stdio: [StdioSpec::Null, StdioSpec::Fd(r.into()), StdioSpec::Inherit],
            new_process_group: true,
            ..Program::new(["prog", "arg"])
        };
        let c = p.try_clone().unwrap();
        assert_eq!(c.argv, ["prog", "arg"]);
        assert_eq!(c.env, p.env);
        assert!(c.new_process_group);
        assert!(matches!(c.stdio[0], StdioSpec::Null));
        assert!(matches!(c.stdio[2], StdioSpec::Inherit));
        let (StdioSpec::Fd(a), StdioSpec::Fd(b)) = (&p.stdio[1], &c.stdio[1]) else {
            panic!("stdout is not a descriptor");
        };
        assert_ne!(a.as_raw_fd(), b.as_raw_fd());
    }
}
