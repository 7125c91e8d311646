//! Graded recovery from a diagnosed hang.
//!
//! - [`ladder`]: for a diagnosis class, try the configured steps least
//!   destructive first (record → demote → stop → kill → kill tree/cgroup →
//!   freeze cgroup → restart unit → a controlled restart); before each, pin the target
//!   (pidfd) and re-check the [`evidence`]; after each, wait for the
//!   symptom to clear before escalating; record every step as an event.
//! - [`target`]: the one definition of which processes a diagnosis blames
//!   with its target ([`blamed_set`]); the `Target` and `Blame` types
//!   themselves are `selfheal-event`'s, shared with the heavy detector.
//! - [`policy`]: who is never touched (pid 1, kernel threads, selfheal and
//!   its ancestors, `recovery.protected`/`protected_units`) and where
//!   recovery may act at all (`recovery.allowed_cgroups`).
//! - [`rate`]: actions per minute and a cool-down per target.
//! - [`restart`]: the controlled restart's record (state dir, history,
//!   pstore, EFI variable) and the `restart` event the next start records.
//! - [`ops`]: every system call recovery makes, behind [`SystemOps`], with a
//!   real implementation ([`LinuxOps`]) and a recording fake
//!   ([`fake::FakeSystem`]) so the policy is tested without root and
//!   without ever signalling a real process.
#![forbid(unsafe_code)]

pub mod evidence;
pub mod fake;
pub mod ladder;
pub mod ops;
pub mod policy;
pub mod rate;
pub mod restart;
pub mod target;

pub use evidence::{Evidence, Recheck, Refusal, SymptomProbe};
pub use ladder::{Blocker, Incident, Ladder, LadderOptions, LadderReport, Outcome, StepRecord};
pub use ops::{FuseConnection, LinuxOps, OpsError, Pinned, ProcInfo, SystemOps, WatchdogControl};
pub use policy::Policy;
pub use rate::RateLimiter;
pub use restart::{RestartRecord, RestartStore};
pub use selfheal_config::Action;
pub use target::{blamed_set, broad_cgroup, program_covers};
