//! The guest's end of the link to `selfheal vm` on the host (`[host_link]`,
//! docs/vm.md): a thread that writes a heartbeat every period and every
//! event the daemon records, one JSON line each, to a virtio-serial port.
//!
//! Writes never block the daemon: the port is opened non-blocking (the
//! guest's write blocks while the host end is not connected) and events
//! wait in a bounded queue; what cannot be sent is dropped and counted. A
//! hello (with the boot id) goes out first, again after writes resume, and
//! every 5 s, so the host tells a rebooted guest from a rolled-back one.
//!
//! The other way: on a virtio port (a character device) the port is opened
//! read-write and a reader thread takes the host's [`HostMessage`]s (the
//! hello says `host_messages: true`, so the host sends them). On a
//! rollback notice the hooks registered with [`HostLink::on_host_message`]
//! run: the daemon re-baselines what measures time gaps (stall canaries,
//! the light detector's heartbeat), since the guest's clocks jumped over
//! time in which none of its code ran, and records the rollback. The
//! host's checkpoint stops ([`HostMessage::Stopped`], after every
//! checkpoint) go to a ledger ([`HostLink::follow_stops`]) that the hang
//! pipeline holds CPU stalls against: a stall the stops explain is none.
//! So do the vCPU threads' waits for a host CPU ([`HostMessage::Waited`],
//! every 50 ms, asked for in the hello when `excuse_host_waits` is on),
//! each on its own CPU.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_config::HostLinkConfig;
use selfheal_detect::host_stops::{HostWait, SharedHostStops};
use selfheal_detect::Heartbeat;
use selfheal_event::{Event, EventSink};
use selfheal_guestlink::{find_port, BadLine, GuestMessage, HostMessage, LineReader, PortLookup};

/// Events queued for the host at most (beyond: dropped, counted).
const QUEUE: usize = 1024;
/// The host-message reader waits this long for data before it looks at
/// its stop flag again.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// A hello at least this often.
const HELLO_EVERY: Duration = Duration::from_secs(5);
/// The host's stops are summed up in the log once per this many lines
/// (one line per checkpoint: every 10 s at 20 a second).
const STOPS_LOG_EVERY: u64 = 200;

/// Counters of the link.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Lines written whole.
    pub sent: AtomicU64,
    /// Events or heartbeats dropped (queue full, host not reading).
    pub dropped: AtomicU64,
    /// Messages from the host understood.
    pub received: AtomicU64,
    /// Lines from the host that were not a message this guest knows.
    pub received_bad: AtomicU64,
    /// Lines of the host's checkpoint stops placed.
    pub stops_told: AtomicU64,
    /// Lines of the host's vCPU waits taken.
    pub waits_told: AtomicU64,
}

/// What the guest takes the host's word on (`[host_link]`
/// `excuse_host_stops`, `excuse_host_waits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excuse {
    /// QEMU stopped for checkpoints.
    pub stops: bool,
    /// vCPU threads waiting for a host CPU.
    pub waits: bool,
}

/// What runs on each message from the host.
pub type HostHook = Arc<dyn Fn(&HostMessage) + Send + Sync>;

/// The running link: an [`EventSink`] feeding the writer thread.
pub struct HostLink {
    tx: SyncSender<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
    hooks: Arc<Mutex<Vec<HostHook>>>,
    /// Where it writes.
    pub port: PathBuf,
    /// Counters.
    pub counters: Arc<LinkCounters>,
}

impl std::fmt::Debug for HostLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLink")
            .field("port", &self.port)
            .finish()
    }
}

impl HostLink {
    /// Starts the link when the configured port exists; `Ok(None)` when it
    /// does not (not a VM, or one without the port) or is turned off.
    /// `light` is the light detector's heartbeat (reported as `healthy`),
    /// `period` its sampling period.
    pub fn start(
        config: &HostLinkConfig,
        roots: &PortLookup,
        light: Arc<Heartbeat>,
        period: Duration,
    ) -> std::io::Result<Option<HostLink>> {
        let Some(port) = find_port(&config.port, roots) else {
            return Ok(None);
        };
        // A virtio port takes one open: read and write through it. Anything
        // else (a FIFO in tests) is only written.
        let readable = std::fs::metadata(&port).is_ok_and(|m| m.file_type().is_char_device());
        let file = OpenOptions::new()
            .write(true)
            .read(readable)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&port)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(LinkCounters::default());
        let hooks: Arc<Mutex<Vec<HostHook>>> = Arc::default();
        let reader = if readable {
            Some(spawn_reader(
                file.try_clone()?,
                hooks.clone(),
                stop.clone(),
                counters.clone(),
            )?)
        } else {
            None
        };
        let writer = Writer {
            host_messages: readable,
            host_waits: readable && config.excuse_host_waits,
            file,
            rx,
            stop: stop.clone(),
            counters: counters.clone(),
            light,
            healthy_age: (period * 3).max(Duration::from_secs(1)),
            every: config.heartbeat.get(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        };
        let thread = std::thread::Builder::new()
            .name("selfheal-hostlink".into())
            .stack_size(256 * 1024)
            .spawn(move || writer.run())?;
        Ok(Some(HostLink {
            tx,
            stop,
            thread: Some(thread),
            reader,
            hooks,
            port,
            counters,
        }))
    }

    /// The sink that forwards events to the host.
    pub fn sink(&self) -> Arc<dyn EventSink> {
        Arc::new(LinkSink {
            tx: self.tx.clone(),
            counters: self.counters.clone(),
        })
    }

    /// Runs `f` on every message the host sends from now on.
    pub fn on_host_message(&self, f: impl Fn(&HostMessage) + Send + Sync + 'static) {
        lock(&self.hooks).push(Arc::new(f));
    }

    /// Places the host's checkpoint stops ([`HostMessage::Stopped`]) and
    /// vCPU waits ([`HostMessage::Waited`]), as `excuse` says, on this
    /// guest's clock, from now on; returns the ledger they go to. A line
    /// the host could not have measured is counted as bad and dropped.
    pub fn follow_stops(&self, excuse: Excuse) -> SharedHostStops {
        let ledger: SharedHostStops = Arc::default();
        self.on_host_message(stops_hook(ledger.clone(), self.counters.clone(), excuse));
        ledger
    }

    /// Stops the writer (after it sent what is queued) and the reader.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`HostLink::follow_stops`] runs on each host message: stops and
/// waits (those `excuse` takes) go to `ledger`; a rollback makes it learn
/// the clocks' offset again.
fn stops_hook(
    ledger: SharedHostStops,
    counters: Arc<LinkCounters>,
    excuse: Excuse,
) -> impl Fn(&HostMessage) + Send + Sync + 'static {
    move |m| {
        // Read as early as possible: the later, the looser the bound.
        let received = selfheal_sys::bpf::monotonic_ns() / 1000;
        match m {
            HostMessage::Stopped(stops) if excuse.stops => {
                if let Err(e) = stops.validate() {
                    counters.received_bad.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("host link: host stops refused: {e}");
                    return;
                }
                let mut l = lock(&ledger);
                l.news(received, stops.host_us, stops.offset_min_us, &stops.spans);
                let n = counters.stops_told.fetch_add(1, Ordering::Relaxed) + 1;
                if n % STOPS_LOG_EVERY == 1 {
                    tracing::info!(
                        "host link: {n} lines of host checkpoint stops; {} spans placed, {} not (clocks not yet bounded), offset known within {}",
                        l.spans_placed,
                        l.spans_unplaced,
                        uncertainty(&l)
                    );
                }
            }
            HostMessage::Waited(waits) if excuse.waits => {
                if let Err(e) = waits.validate() {
                    counters.received_bad.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("host link: host vCPU waits refused: {e}");
                    return;
                }
                let ws: Vec<HostWait> = waits
                    .waits
                    .iter()
                    .map(|w| HostWait {
                        cpu: w.cpu,
                        span: [w.from_us, w.until_us],
                        wait_us: w.wait_us,
                    })
                    .collect();
                let mut l = lock(&ledger);
                l.waits_news(received, waits.host_us, waits.offset_min_us, &ws);
                let n = counters.waits_told.fetch_add(1, Ordering::Relaxed) + 1;
                if n % STOPS_LOG_EVERY == 1 {
                    tracing::info!(
                        "host link: {n} lines of host vCPU waits; {} waits placed, {} not (clocks not yet bounded), offset known within {}",
                        l.waits_placed,
                        l.waits_unplaced,
                        uncertainty(&l)
                    );
                }
            }
            HostMessage::Rollback { .. } => lock(&ledger).clock_changed(),
            HostMessage::Stopped(_) | HostMessage::Waited(_) => {}
        }
    }
}

fn uncertainty(l: &selfheal_detect::host_stops::HostStops) -> String {
    l.last_uncertainty_us
        .map_or("-".to_string(), |u| format!("{:.1} ms", u as f64 / 1000.0))
}

/// Reads the host's lines from `src` (non-blocking: no data, or no host
/// connected, is polled again shortly) and runs the hooks on each message.
fn spawn_reader<R: Read + AsFd + Send + 'static>(
    mut src: R,
    hooks: Arc<Mutex<Vec<HostHook>>>,
    stop: Arc<AtomicBool>,
    counters: Arc<LinkCounters>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("selfheal-hostlink-rx".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut lines = LineReader::<HostMessage>::of();
            let mut buf = vec![0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                // Woken by the data itself, not a 50 ms poll: a line's
                // arrival time bounds the host's clock offset, and a late
                // stamp would widen the bound (the host's checkpoint lines
                // come every 50 ms, in step with such a poll).
                let _ = selfheal_sys::poll::poll_readable(src.as_fd(), Some(POLL_WAIT));
                let n = match src.read(&mut buf) {
                    Ok(n) if n > 0 => n,
                    // EOF (the host end is not connected: the port then
                    // polls readable at once) or nothing yet.
                    _ => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                for m in lines.push(&buf[..n]) {
                    match m {
                        Ok(m) => {
                            counters.received.fetch_add(1, Ordering::Relaxed);
                            let hs: Vec<HostHook> = lock(&hooks).clone();
                            for h in hs {
                                h(&m);
                            }
                        }
                        Err(bad) => {
                            counters.received_bad.fetch_add(1, Ordering::Relaxed);
                            match bad {
                                BadLine::Invalid { error, head } => tracing::warn!(
                                    "host link: skipped a line from the host that is not a message this selfheal knows (a newer host?): {error}: {head}"
                                ),
                                BadLine::TooLong { bytes } => tracing::warn!(
                                    "host link: skipped a {bytes}-byte line from the host"
                                ),
                            }
                        }
                    }
                }
            }
        })
}

struct LinkSink {
    tx: SyncSender<Event>,
    counters: Arc<LinkCounters>,
}

impl EventSink for LinkSink {
    fn emit(&self, event: Event) -> bool {
        let ok = self.tx.try_send(event).is_ok();
        if !ok {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

struct Writer {
    file: File,
    rx: Receiver<Event>,
    stop: Arc<AtomicBool>,
    counters: Arc<LinkCounters>,
    light: Arc<Heartbeat>,
    healthy_age: Duration,
    every: Duration,
    boot_id: String,
    host_messages: bool,
    host_waits: bool,
}

impl Writer {
    fn run(mut self) {
        let mut seq = 0u64;
        let mut next_beat = Instant::now();
        let mut hello_due = true;
        let mut last_hello = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if hello_due || last_hello.elapsed() >= HELLO_EVERY {
                let hello = GuestMessage::Hello {
                    version: env!("CARGO_PKG_VERSION").into(),
                    pid: std::process::id(),
                    boot_id: self.boot_id.clone(),
                    host_messages: self.host_messages,
                    host_waits: self.host_waits,
                };
                hello_due = !self.send(&hello);
                last_hello = Instant::now();
            }
            let now = Instant::now();
            if now >= next_beat {
                seq += 1;
                let beat = GuestMessage::Heartbeat {
                    seq,
                    mono_ms: selfheal_sys::bpf::monotonic_ns() / 1_000_000,
                    unix_ms: selfheal_event::unix_ms(std::time::SystemTime::now()),
                    healthy: self.light.is_fresh(self.healthy_age),
                };
                if !self.send(&beat) {
                    hello_due = true;
                }
                // Absolute deadlines: a stalled guest shows as a gap, not a drift.
                next_beat = (next_beat + self.every).max(now);
            }
            let wait = next_beat.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait.min(Duration::from_millis(200))) {
                Ok(event) => {
                    if !self.send(&GuestMessage::Event {
                        event: Box::new(event),
                    }) {
                        hello_due = true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Drain what is queued, best effort.
        while let Ok(event) = self.rx.try_recv() {
            self.send(&GuestMessage::Event {
                event: Box::new(event),
            });
        }
    }

    /// One line in one write; false when it was not (all) written.
    fn send(&mut self, msg: &GuestMessage) -> bool {
        let line = msg.to_line();
        match self.file.write(&line) {
            Ok(n) if n == line.len() => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(_) => {
                // Cut short: end the line so the host's reader resynchronises.
                let _ = self.file.write(b"\n");
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_event::{EventKind, Severity, Source};
    use selfheal_guestlink::LineReader;

    #[test]
    fn heartbeats_and_events_reach_the_port_as_lines() {
        // A FIFO stands in for the virtio port.
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("port");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut f = std::fs::File::open(fifo).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    match f.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(_) => break,
                    }
                }
                buf
            })
        };
        // The reader must open first or the non-blocking open fails (ENXIO).
        std::thread::sleep(Duration::from_millis(200));
        let light = Arc::new(Heartbeat::new());
        light.beat();
        let config = HostLinkConfig {
            port: fifo.to_str().unwrap().into(),
            heartbeat: selfheal_config::HumanDuration::from_millis(50),
            excuse_host_stops: true,
            excuse_host_waits: true,
        };
        let link = HostLink::start(
            &config,
            &PortLookup::default(),
            light,
            Duration::from_millis(100),
        )
        .unwrap()
        .expect("the port exists");
        let sink = link.sink();
        assert!(sink.emit(Event::now(
            EventKind::Alert,
            Severity::Warning,
            Source::Light,
            "x"
        )));
        // Hello, the event and at least three beats written, however slow
        // the machine (a fixed 400 ms once saw a single beat at load 11).
        let deadline = Instant::now() + Duration::from_secs(20);
        while link.counters.sent.load(Ordering::Relaxed) < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        link.stop();
        let msgs: Vec<GuestMessage> = LineReader::new()
            .push(&reader.join().unwrap())
            .into_iter()
            .map(|m| m.unwrap())
            .collect();
        assert!(matches!(msgs[0], GuestMessage::Hello { .. }), "{msgs:?}");
        let beats: Vec<u64> = msgs
            .iter()
            .filter_map(|m| match m {
                GuestMessage::Heartbeat { seq, healthy, .. } => {
                    assert!(*healthy);
                    Some(*seq)
                }
                _ => None,
            })
            .collect();
        assert!(
            beats.len() >= 3 && beats.windows(2).all(|w| w[1] == w[0] + 1),
            "{beats:?}"
        );
        assert!(msgs
            .iter()
            .any(|m| matches!(m, GuestMessage::Event { event } if event.kind == EventKind::Alert)));
    }

    #[test]
    fn the_hosts_rollback_notice_reaches_the_hooks() {
        use std::os::unix::net::UnixStream;
        let (mut host, guest) = UnixStream::pair().unwrap();
        guest.set_nonblocking(true).unwrap();
        let hooks: Arc<Mutex<Vec<HostHook>>> = Arc::default();
        let (htx, hrx) = mpsc::channel();
        let htx = Mutex::new(htx);
        lock(&hooks).push(Arc::new(move |m: &HostMessage| {
            let _ = lock(&htx).send(m.clone());
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(LinkCounters::default());
        let t = spawn_reader(guest, hooks, stop.clone(), counters.clone()).unwrap();
        let m = HostMessage::Rollback {
            seq: 1,
            rolled_back_ms: 5017,
            pause_ms: 27,
            trigger: "hang".into(),
        };
        let line = m.to_line();
        // A newer host's message, then the notice in two pieces.
        host.write_all(b"{\"t\":\"future\"}\n").unwrap();
        host.write_all(&line[..10]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        host.write_all(&line[10..]).unwrap();
        assert_eq!(hrx.recv_timeout(Duration::from_secs(10)).unwrap(), m);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert_eq!(counters.received.load(Ordering::Relaxed), 1);
        assert_eq!(counters.received_bad.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_hosts_stops_reach_the_ledger_and_bad_ones_do_not() {
        use selfheal_guestlink::Stops;
        use std::os::unix::net::UnixStream;
        let (mut host, guest) = UnixStream::pair().unwrap();
        guest.set_nonblocking(true).unwrap();
        let ledger: SharedHostStops = Arc::default();
        let counters = Arc::new(LinkCounters::default());
        let hooks: Arc<Mutex<Vec<HostHook>>> = Arc::default();
        lock(&hooks).push(Arc::new(stops_hook(
            ledger.clone(),
            counters.clone(),
            Excuse {
                stops: true,
                waits: true,
            },
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let t = spawn_reader(guest, hooks, stop.clone(), counters.clone()).unwrap();
        // Host and guest share this machine's clock here: offset 0, the
        // host's heartbeat bound a little below it.
        let now = selfheal_sys::bpf::monotonic_ns() / 1000;
        let line = |spans: Vec<[u64; 2]>| {
            HostMessage::Stopped(Stops {
                host_us: now,
                offset_min_us: Some(-2_000),
                spans,
            })
            .to_line()
        };
        host.write_all(&line(vec![[now - 5_000_000, now - 100_000]]))
            .unwrap();
        // Reversed: refused whole.
        host.write_all(&line(vec![[now - 50_000, now - 90_000]]))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.received.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert_eq!(counters.stops_told.load(Ordering::Relaxed), 1);
        assert_eq!(counters.received_bad.load(Ordering::Relaxed), 1);
        let l = lock(&ledger);
        // Placed inside the 4.9 s stop, short by the clocks' uncertainty
        // (the line's arrival delay, under a second even on a busy
        // machine, plus 2 ms); never longer.
        let placed = l.stopped_within(0, u64::MAX);
        assert!(
            placed > Duration::from_millis(3_900) && placed <= Duration::from_millis(4_898),
            "{placed:?}"
        );
        assert_eq!(l.stopped_within(now - 90_000, now), Duration::ZERO);
    }

    /// Sends one good and one impossible line of vCPU waits through a
    /// reader whose hook takes what `excuse` says; the ledger and counters.
    fn waits_through_the_reader(excuse: Excuse) -> (SharedHostStops, Arc<LinkCounters>, u64) {
        use selfheal_guestlink::{VcpuWait, Waits};
        use std::os::unix::net::UnixStream;
        let (mut host, guest) = UnixStream::pair().unwrap();
        guest.set_nonblocking(true).unwrap();
        let ledger: SharedHostStops = Arc::default();
        let counters = Arc::new(LinkCounters::default());
        let hooks: Arc<Mutex<Vec<HostHook>>> = Arc::default();
        lock(&hooks).push(Arc::new(stops_hook(
            ledger.clone(),
            counters.clone(),
            excuse,
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let t = spawn_reader(guest, hooks, stop.clone(), counters.clone()).unwrap();
        let now = selfheal_sys::bpf::monotonic_ns() / 1000;
        let line = |wait_us: u64| {
            HostMessage::Waited(Waits {
                host_us: now,
                offset_min_us: Some(-2_000),
                waits: vec![VcpuWait {
                    cpu: 1,
                    from_us: now - 1_000_000,
                    until_us: now - 500_000,
                    wait_us,
                }],
            })
            .to_line()
        };
        host.write_all(&line(400_000)).unwrap();
        // A wait longer than its interval: refused whole.
        host.write_all(&line(600_000)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.received.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        (ledger, counters, now)
    }

    #[test]
    fn the_hosts_vcpu_waits_reach_the_ledger_on_their_cpu_and_bad_ones_do_not() {
        let (ledger, counters, now) = waits_through_the_reader(Excuse {
            stops: true,
            waits: true,
        });
        assert_eq!(counters.waits_told.load(Ordering::Relaxed), 1);
        assert_eq!(counters.received_bad.load(Ordering::Relaxed), 1);
        let l = lock(&ledger);
        // The whole 400 ms, in a window wide enough for any offset.
        assert_eq!(l.waited_within(1, 0, u64::MAX), Duration::from_millis(400));
        assert_eq!(l.waited_within(0, 0, u64::MAX), Duration::ZERO);
        // Told up to the line's time, less the clocks' uncertainty.
        assert!(l.covered_until() > now - 1_000_000 && l.covered_until() <= now);
    }

    #[test]
    fn with_waits_not_excused_the_hosts_waits_are_ignored() {
        let (ledger, counters, _) = waits_through_the_reader(Excuse {
            stops: true,
            waits: false,
        });
        assert_eq!(counters.waits_told.load(Ordering::Relaxed), 0);
        assert_eq!(lock(&ledger).waited_within(1, 0, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn an_absent_port_means_no_link() {
        let d = tempfile::tempdir().unwrap();
        let roots = PortLookup {
            dev: d.path().into(),
            sys: d.path().into(),
        };
        let config = HostLinkConfig::default();
        let light = Arc::new(Heartbeat::new());
        assert!(
            HostLink::start(&config, &roots, light, Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
    }
}
