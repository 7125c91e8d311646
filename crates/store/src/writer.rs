//! The daemon's writer: one thread owns the connection and is fed through a
//! bounded channel, so detector threads never wait for the disk. What is
//! queued when the thread wakes is written in one transaction (one fsync).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;
use selfheal_event::{Event, EventSink};

use crate::error::StoreError;
use crate::open::Store;
use crate::write::Retention;

/// How often a batch that failed because the database was locked is retried
/// (each attempt already waits [`crate::BUSY_TIMEOUT`]).
const BUSY_RETRIES: u32 = 2;

/// Sizing of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Events that can wait in the channel; beyond this `emit` drops.
    pub capacity: usize,
    /// Most events written in one transaction.
    pub max_batch: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            capacity: 4096,
            max_batch: 1024,
        }
    }
}

/// Lock-free counters the metrics code reads; all count events except
/// `write_errors`, which counts failed transactions.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Events committed to disk.
    pub written: AtomicU64,
    /// Events refused by `emit` (channel full or writer stopped).
    pub dropped: AtomicU64,
    /// Transactions that failed (disk full, I/O error, lock timeout, …).
    pub write_errors: AtomicU64,
    /// Events that were accepted but lost because their transaction failed.
    pub lost: AtomicU64,
}

/// Why a request to the writer thread failed.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The writer was given a read-only store.
    #[error("cannot write events to {path}: the store was opened read-only")]
    ReadOnly {
        /// The store file.
        path: PathBuf,
    },
    /// The thread could not be started.
    #[error("cannot start the store writer thread for {path}: {source}")]
    Spawn {
        /// The store file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The thread has stopped; events are no longer recorded.
    #[error("the store writer for {path} has stopped; events are no longer recorded")]
    Stopped {
        /// The store file.
        path: PathBuf,
    },
    /// The thread did not answer in time (the disk may be stalled).
    #[error("the store writer for {path} did not answer within {timeout:?}; is its disk stalled?")]
    Timeout {
        /// The store file.
        path: PathBuf,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// Some accepted events could not be written; the log says why.
    #[error("{lost} events could not be written to {path}; see the log for the SQLite errors")]
    WriteFailed {
        /// The store file.
        path: PathBuf,
        /// Events lost since the previous flush.
        lost: u64,
    },
    /// The thread panicked (a bug).
    #[error("the store writer thread for {path} panicked; please report this bug")]
    Panicked {
        /// The store file.
        path: PathBuf,
    },
    /// The store reported an error for a request (retention).
    #[error(transparent)]
    Store(#[from] StoreError),
}

// Events are nearly every message: boxing them to shrink the rare control
// messages would cost an allocation per emit.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(Event),
    Flush(SyncSender<()>),
    Retention(Retention, SyncSender<Result<u64, StoreError>>),
    Shutdown,
}

/// Writes emitted events to the store from a dedicated thread.
#[derive(Debug)]
pub struct StoreWriter {
    /// Unbounded, but `emit` keeps at most `capacity` events queued
    /// (`queued`): a bounded std channel allocates and touches every slot
    /// up front (4096 events: 1.2 MB resident, locked under mlockall).
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    counters: Arc<WriterCounters>,
    /// Set before shutdown so late `emit`s are refused instead of lost.
    closed: AtomicBool,
    /// `lost` as of the previous flush, to report only new losses.
    lost_reported: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl StoreWriter {
    /// Moves `store` into a new writer thread.
    pub fn start(store: Store, options: WriterOptions) -> Result<StoreWriter, WriterError> {
        let path = store.path().to_path_buf();
        if store.is_read_only() {
            return Err(WriterError::ReadOnly { path });
        }
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let thread_queued = Arc::clone(&queued);
        let counters = Arc::new(WriterCounters::default());
        let thread_counters = Arc::clone(&counters);
        let max_batch = options.max_batch.max(1);
        let thread = thread::Builder::new()
            .name("selfheal-store".into())
            .spawn(move || run(store, rx, &thread_counters, &thread_queued, max_batch))
            .map_err(|source| WriterError::Spawn {
                path: path.clone(),
                source,
            })?;
        Ok(StoreWriter {
            tx,
            queued,
            capacity: options.capacity.max(1),
            counters,
            closed: AtomicBool::new(false),
            lost_reported: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
            path,
        })
    }

    /// The counters, shareable with the metrics code.
    pub fn counters(&self) -> &Arc<WriterCounters> {
        &self.counters
    }

    /// Waits until every event emitted before this call is on disk (or
    /// counted as lost, which is reported as [`WriterError::WriteFailed`]).
    pub fn flush(&self) -> Result<(), WriterError> {
        self.flush_timeout(None)
    }

    /// [`StoreWriter::flush`] giving up after `timeout` when one is given.
    pub fn flush_timeout(&self, timeout: Option<Duration>) -> Result<(), WriterError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.request(Msg::Flush(reply), answer, timeout)?;
        self.check_lost()
    }

    /// Applies `retention` on the writer thread (between batches, so it never
    /// contends with the writer for the lock). Returns events deleted.
    pub fn apply_retention(&self, retention: Retention) -> Result<u64, WriterError> {
        let (reply, answer) = mpsc::sync_channel(1);
        Ok(self.request(Msg::Retention(retention, reply), answer, None)??)
    }

    /// Refuses further events, writes what is queued, closes the store and
    /// joins the thread. Later calls do nothing. Stop the producers first:
    /// an `emit` racing with the thread's exit can be lost even though it
    /// returned true. Blocks while the disk does (it waits for the last
    /// commit); [`StoreWriter::flush_timeout`] first bounds that wait.
    pub fn shutdown(&self) -> Result<(), WriterError> {
        self.closed.store(true, Ordering::SeqCst);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(thread) = thread else {
            return Ok(());
        };
        // An error means the thread already exited; join says how.
        let _ = self.tx.send(Msg::Shutdown);
        thread.join().map_err(|_| WriterError::Panicked {
            path: self.path.clone(),
        })?;
        self.check_lost()
    }

    /// Sends a request (never blocks: the channel is unbounded) and waits
    /// for its answer, at most `timeout` when one is given.
    fn request<T>(
        &self,
        msg: Msg,
        answer: Receiver<T>,
        timeout: Option<Duration>,
    ) -> Result<T, WriterError> {
        let stopped = || WriterError::Stopped {
            path: self.path.clone(),
        };
        let Some(timeout) = timeout else {
            self.tx.send(msg).map_err(|_| stopped())?;
            return answer.recv().map_err(|_| stopped());
        };
        let deadline = Instant::now() + timeout;
        let timed_out = || WriterError::Timeout {
            path: self.path.clone(),
            timeout,
        };
        self.tx.send(msg).map_err(|_| stopped())?;
        let left = deadline.saturating_duration_since(Instant::now());
        answer.recv_timeout(left).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => timed_out(),
            mpsc::RecvTimeoutError::Disconnected => stopped(),
        })
    }

    /// Reports events lost since the previous check.
    fn check_lost(&self) -> Result<(), WriterError> {
        let lost = self.counters.lost.load(Ordering::SeqCst);
        let before = self.lost_reported.swap(lost, Ordering::SeqCst);
        if lost > before {
            return Err(WriterError::WriteFailed {
                path: self.path.clone(),
                lost: lost - before,
            });
        }
        Ok(())
    }
}

impl EventSink for StoreWriter {
    /// Queues the event without ever blocking; false (and `dropped` + 1)
    /// when the channel is full or the writer has stopped. The writer
    /// thread logs drops, so this path does no I/O.
    fn emit(&self, event: Event) -> bool {
        if !self.closed.load(Ordering::Relaxed) {
            if self.queued.fetch_add(1, Ordering::AcqRel) < self.capacity
                && self.tx.send(Msg::Event(event)).is_ok()
            {
                return true;
            }
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Waits until everything queued is committed (synchronous=FULL: on disk).
    fn flush(&self, timeout: Duration) -> bool {
        self.flush_timeout(Some(timeout)).is_ok()
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "store writer shutdown");
        }
    }
}

/// The thread: batch, write, answer requests; never panics on I/O errors.
fn run(
    mut store: Store,
    rx: Receiver<Msg>,
    counters: &WriterCounters,
    queued: &AtomicUsize,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut flushes = Vec::new();
    let mut retentions = Vec::new();
    let mut stopping = false;
    let mut drops_logged = 0;
    loop {
        // After Shutdown, drain what is queued without waiting for more.
        let first = if stopping {
            rx.try_recv()
        } else {
            rx.recv().map_err(|_| TryRecvError::Disconnected)
        };
        let Ok(mut msg) = first else { break };
        loop {
            match msg {
                Msg::Event(e) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    batch.push(e);
                }
                Msg::Flush(reply) => flushes.push(reply),
                Msg::Retention(r, reply) => retentions.push((r, reply)),
                Msg::Shutdown => stopping = true,
            }
            if batch.len() >= max_batch {
                break;
            }
            match rx.try_recv() {
                Ok(m) => msg = m,
                Err(_) => break,
            }
        }
        write_batch(&mut store, &mut batch, counters);
        for (retention, reply) in retentions.drain(..) {
            let _ = reply.send(store.apply_retention(&retention));
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(());
        }
        log_drops(counters, &mut drops_logged);
    }
    log_drops(counters, &mut drops_logged);
    let path = store.path().to_path_buf();
    if let Err(e) = store.close() {
        tracing::error!(path = %path.display(), error = %e, "closing the store");
    }
}

fn write_batch(store: &mut Store, batch: &mut Vec<Event>, counters: &WriterCounters) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let mut attempt = 0;
    loop {
        match store.append_batch(batch) {
            Ok(_) => {
                counters.written.fetch_add(n, Ordering::SeqCst);
                break;
            }
            Err(e) if is_busy(&e) && attempt < BUSY_RETRIES => attempt += 1,
            Err(e) => {
                counters.write_errors.fetch_add(1, Ordering::SeqCst);
                counters.lost.fetch_add(n, Ordering::SeqCst);
                tracing::error!(path = %store.path().display(), events = n, error = %e, "events lost");
                break;
            }
        }
    }
    batch.clear();
}

fn is_busy(e: &StoreError) -> bool {
    matches!(e, StoreError::Sqlite { source, .. }
        if matches!(source.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)))
}

/// Logs drops at 1, 2, 4, 8, … so a flood does not flood the log too.
fn log_drops(counters: &WriterCounters, logged: &mut u64) {
    let dropped = counters.dropped.load(Ordering::Relaxed);
    if dropped > 0 && dropped >= 2 * *logged {
        tracing::warn!(
            dropped_total = dropped,
            "store writer queue was full; events dropped"
        );
        *logged = dropped;
    }
}
