//! The HTTP API's server and client, on well-kept crates: hyper (HTTP/1.1
//! parsing and connection handling) on a current-thread tokio runtime of
//! its own thread, and ureq for the client `selfheal status` uses.
//!
//! Why these: hyper is the HTTP implementation most of the Rust ecosystem
//! runs on (fuzzed upstream, strict request parsing, header-read
//! timeouts); on a current-thread runtime an idle connection costs a few
//! kilobytes and no thread, so hundreds of idle, slow or garbage
//! connections neither block `/healthz` nor grow the daemon, and the thread
//! sleeps in `epoll_wait` with no timer when nothing is connected (no idle
//! wake-ups). Routing stays ours: a handful of fixed paths. The limits are
//! in [`Limits`].

pub mod client;
mod request;
mod server;

pub use request::{ErrorBody, Request, Response, Router};
pub(crate) use server::panic_message;
pub use server::{answer_raw, HttpServer, HttpStats, Limits};
