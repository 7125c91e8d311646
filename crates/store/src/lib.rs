//! The event store: every [`selfheal_event::Event`] in an embedded SQLite file.
//!
//! - [`Store::open`] (daemon) creates, initialises and migrates the file;
//!   [`Store::open_read_only`] (CLI) never creates or changes anything.
//! - Files are recognised by `PRAGMA application_id` = [`APPLICATION_ID`] and
//!   versioned by `PRAGMA user_version` = [`SCHEMA_VERSION`]. Anything else
//!   (random bytes, a truncated file, another application's database, a
//!   newer schema) is refused with an [`OpenError`] and left byte-identical.
//! - WAL mode with `synchronous=FULL`: an event is on disk when
//!   [`Store::append`] returns, and readers never block the writer.
//! - [`StoreWriter`] is the daemon's [`selfheal_event::EventSink`]: a thread
//!   fed by a bounded channel that batches events into transactions and drops
//!   (and counts) rather than block a detector.
//! - [`Retention`] bounds the history by age and count; [`Query`] reads it.
#![forbid(unsafe_code)]

mod error;
mod inspect;
mod open;
mod path;
mod query;
mod schema;
mod write;
mod writer;

pub use error::{OpenError, StoreError};
pub use open::{Store, BUSY_TIMEOUT};
pub use path::{default_path, default_path_for_this_process, NoDefaultPath, SYSTEM_STORE_PATH};
pub use query::{Order, Query};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use write::Retention;
pub use writer::{StoreWriter, WriterCounters, WriterError, WriterOptions};
