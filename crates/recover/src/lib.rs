//! Graded recovery from a diagnosed hang.
//!
//! - [`ladder`]: for a diagnosis class, try the configured steps least
//!   destructive first (record → demote → stop → kill → kill tree/cgroup →
//!   freeze cgroup → restart unit → reboot); after each, wait for the
//!   symptom to clear before escalating; record every step as an event.
//! - [`policy`]: who is never touched (pid 1, kernel threads, selfheal and
//!   its ancestors, `recovery.protected`/`protected_units`) and where
//!   recovery may act at all (`recovery.allowed_cgroups`).
//! - [`rate`]: actions per minute and a cool-down per target.
//! - [`ops`]: every system call recovery makes, behind [`SystemOps`], with a
//!   real implementation ([`LinuxOps`]) and a recording fake
//!   ([`fake::FakeSystem`]) so the policy is tested without root and
//!   without ever signalling a real process.
#![forbid(unsafe_code)]

pub mod fake;
pub mod ladder;
pub mod ops;
pub mod policy;
pub mod rate;

pub use ladder::{
    Blame, Incident, Ladder, LadderOptions, LadderReport, Outcome, StepRecord, Target,
};
pub use ops::{LinuxOps, OpsError, ProcInfo, SystemOps};
pub use policy::Policy;
pub use rate::RateLimiter;
pub use selfheal_config::Action;
