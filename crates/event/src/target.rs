//! Whom recovery acts on: the [`Target`] of a diagnosis and the processes
//! it [`Blame`]s. Shared by the heavy detector that names them
//! (`selfheal-diagnose`), the recovery ladder that acts on them
//! (`selfheal-recover`, which computes the blamed set from a process list)
//! and the hang pipeline between them.

use std::collections::BTreeSet;

/// Whom recovery acts on: the identity that makes acting safe and the
/// processes blamed along with it. What the process is (command, cgroup,
/// unit) is the incident's [`Culprit`](crate::Culprit), the one description
/// of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The process.
    pub pid: i32,
    /// Process start time (ticks after boot): a reused pid has another, so
    /// with the pid it names exactly one process, ever.
    pub starttime: u64,
    /// Which processes the diagnosis blames along with this one.
    pub blame: Blame,
}

impl Target {
    /// A target blaming the process and its descendants.
    pub fn tree(pid: i32, starttime: u64) -> Target {
        Target {
            pid,
            starttime,
            blame: Blame::Tree,
        }
    }
}

/// The processes a diagnosis blames: what `kill_tree` kills, and what a
/// cgroup may hold for `kill_cgroup`/`freeze_cgroup` to be allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Blame {
    /// The process and its descendants.
    #[default]
    Tree,
    /// One program's processes that belong together (a fork bomb whose
    /// members were re-parented away from their tree), plus descendants.
    Program(ProgramScope),
    /// Every process in the target's cgroup (a fork bomb filling a cgroup).
    Cgroup,
}

/// A program blamed for a fork bomb: its command and uid, and the evidence
/// that ties processes to the bomb. Never "every process with this name":
/// a process of the same command and uid belongs to the bomb only when it
/// is one of the members the diagnosis counted or shares a process group
/// with them (a fork keeps its parent's process group; a shell gives each
/// job its own, so the shell that started the bomb and same-named programs
/// started elsewhere are not in it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProgramScope {
    /// Command name (`comm`).
    pub comm: String,
    /// Real uid.
    pub uid: u32,
    /// Process groups of the counted members.
    pub pgids: BTreeSet<i32>,
    /// The counted members, as (pid, start time).
    pub members: BTreeSet<(i32, u64)>,
}
