//! The server: one thread running a current-thread tokio runtime; hyper
//! serves each connection as a task; routes that may block (the store,
//! metric collectors) run on a small blocking pool behind semaphores.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::request::{Request, Response, Router};

/// Bounds on what clients can make the server hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; further ones are closed at once (and
    /// counted), so the kernel's accept queue never fills.
    pub max_connections: usize,
    /// A client must send its whole request head within this (slowloris).
    pub header_read_timeout: Duration,
    /// Hard bound on a connection's whole life, response included (slow
    /// readers).
    pub connection_timeout: Duration,
    /// Largest request head (request line and headers); larger heads are
    /// refused. hyper's minimum is 8 KiB.
    pub max_head_bytes: usize,
    /// Requests for `/api/*` handled at once, and, separately, requests
    /// for other paths that may block (`/metrics`).
    pub handler_slots: usize,
    /// How long a request waits for a handler slot before a 503.
    pub queue_timeout: Duration,
    /// Paths answered on the event loop itself: they must never block
    /// (`/healthz` reads atomics only).
    pub inline_paths: &'static [&'static str],
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_head_bytes: 16 * 1024,
            handler_slots: 2,
            queue_timeout: Duration::from_secs(5),
            inline_paths: &["/healthz"],
        }
    }
}

/// What the server has seen (for `/metrics`).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub rejected: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Of those, connections that have not sent a byte yet: they hold no
    /// buffer (hyper's come with the first byte).
    pub awaiting_first_byte: AtomicU64,
    /// Connections cut by the header-read or connection timeout.
    pub timed_out: AtomicU64,
    /// Connections that ended in a protocol error (garbage, oversized head).
    pub bad_requests: AtomicU64,
    /// Requests answered 503 because every handler slot stayed busy.
    pub busy: AtomicU64,
    /// Handlers that panicked (answered 500; the server went on).
    pub handler_panics: AtomicU64,
    /// Times the server loop itself panicked and was restarted.
    pub restarts: AtomicU64,
}

struct Ctx {
    router: Router,
    limits: Limits,
    stats: Arc<HttpStats>,
    api_slots: Arc<Semaphore>,
    other_slots: Arc<Semaphore>,
    /// Test hook: the accept loop panics at its next connection.
    inject_panic: AtomicBool,
}

impl Ctx {
    fn new(router: Router, limits: Limits, stats: Arc<HttpStats>) -> Ctx {
        Ctx {
            router,
            api_slots: Arc::new(Semaphore::new(limits.handler_slots.max(1))),
            other_slots: Arc::new(Semaphore::new(limits.handler_slots.max(1))),
            limits,
            stats,
            inject_panic: AtomicBool::new(false),
        }
    }
}

/// A running server.
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    ctx: Arc<Ctx>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `addr` and serves `router` on a thread of its own, within
    /// `limits`. A panic of the server loop is caught and the loop
    /// restarted on the same socket (counted in [`HttpStats::restarts`]).
    pub fn start(addr: SocketAddr, router: Router, limits: Limits) -> std::io::Result<HttpServer> {
        let listener = StdListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let ctx = Arc::new(Ctx::new(router, limits, Arc::new(HttpStats::default())));
        let ctx2 = ctx.clone();
        let handle = std::thread::Builder::new()
            .name("selfheal-http".into())
            .stack_size(512 * 1024)
            .spawn(move || supervise(listener, ctx2, stop_rx))?;
        Ok(HttpServer {
            addr,
            stop,
            ctx,
            handle: Some(handle),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.ctx.stats.clone()
    }

    /// Test hook: makes the server loop panic when it accepts its next
    /// connection, to prove the panic is caught and the loop restarted.
    #[doc(hidden)]
    pub fn inject_panic(&self) {
        self.ctx.inject_panic.store(true, Ordering::SeqCst);
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_string())
}

/// Runs the server loop, restarting it after a panic, until told to stop.
fn supervise(listener: StdListener, ctx: Arc<Ctx>, stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = match listener.try_clone() {
            Ok(l) => catch_unwind(AssertUnwindSafe(|| run(l, &ctx, stop.clone())))
                .map_err(|p| format!("panicked: {}", panic_message(&*p))),
            Err(e) => Err(format!("cannot reuse the listening socket: {e}")),
        };
        match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => tracing::error!("HTTP server failed ({e}); restarting in {backoff:?}"),
            Err(e) => {
                ctx.stats.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::error!("HTTP server loop {e}; restarting in {backoff:?}");
            }
        }
        if *stop.borrow() {
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Serves until the stop signal; returns an error when the runtime or the
/// socket cannot be set up.
fn run(
    listener: StdListener,
    ctx: &Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(ctx.limits.handler_slots.max(1) * 2)
        .thread_name("selfheal-http-handler")
        .thread_stack_size(512 * 1024)
        .thread_keep_alive(Duration::from_secs(10))
        .build()?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let conns = Arc::new(Semaphore::new(ctx.limits.max_connections.max(1)));
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            tokio::select! {
                changed = stop.changed() => if changed.is_err() || *stop.borrow() {
                    return Ok(());
                },
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if ctx.inject_panic.swap(false, Ordering::SeqCst) {
                            panic!("injected panic in the HTTP server loop (test hook)");
                        }
                        match conns.clone().try_acquire_owned() {
                            Ok(permit) => {
                                ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
                                tokio::spawn(serve_tcp(stream, ctx.clone(), permit));
                            }
                            Err(_) => {
                                ctx.stats.rejected.fetch_add(1, Ordering::Relaxed);
                                drop(stream);
                            }
                        }
                    }
                    // Out of file descriptors or similar: back off instead
                    // of spinning on the error.
                    Err(e) => {
                        tracing::debug!("http accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Decrements the open-connection gauge when a connection ends.
struct OpenGuard(Arc<HttpStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the awaiting-first-byte gauge when the wait ends.
struct AwaitingGuard(Arc<HttpStats>);

impl Drop for AwaitingGuard {
    fn drop(&mut self) {
        self.0.awaiting_first_byte.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for the client's first bytes before handing the connection to
/// hyper, which allocates its read and write buffers (8 KiB each) at once:
/// an idle connection then costs a task and a socket, not 16 KiB of
/// buffers. It peeks one byte into a buffer on the stack: `readable()`
/// alone resolves at once for a fresh socket (tokio allows that false
/// positive, and it happens for every accepted socket), which handed every
/// idle connection to hyper. A client that closes without a byte is
/// dropped here. The time spent waiting counts against the header-read
/// timeout.
async fn serve_tcp(stream: tokio::net::TcpStream, ctx: Arc<Ctx>, permit: OwnedSemaphorePermit) {
    let t0 = tokio::time::Instant::now();
    let limit = ctx.limits.header_read_timeout;
    ctx.stats.open.fetch_add(1, Ordering::Relaxed);
    let waited = {
        let _open = OpenGuard(ctx.stats.clone());
        ctx.stats
            .awaiting_first_byte
            .fetch_add(1, Ordering::Relaxed);
        let _awaiting = AwaitingGuard(ctx.stats.clone());
        let mut first = [0u8; 1];
        tokio::time::timeout(limit, stream.peek(&mut first)).await
    };
    match waited {
        // Closed without a request.
        Ok(Ok(0)) => {}
        Ok(Ok(_)) => {
            let left = limit
                .saturating_sub(t0.elapsed())
                .max(Duration::from_millis(100));
            // Boxed: the waiting task then holds only this small future,
            // not hyper's connection state inline (500 idle connections
            // would otherwise each keep a task of several KiB).
            Box::pin(serve_io(stream, ctx, Some(permit), false, left)).await;
        }
        Ok(Err(e)) => tracing::debug!("http connection: {e}"),
        Err(_) => {
            ctx.stats.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn serve_io<I>(
    io: I,
    ctx: Arc<Ctx>,
    _permit: Option<OwnedSemaphorePermit>,
    half_close: bool,
    header_read_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ctx.stats.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(ctx.stats.clone());
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(false)
        .half_close(half_close)
        .max_buf_size(ctx.limits.max_head_bytes.max(8192))
        .serve_connection(TokioIo::new(io), service);
    match tokio::time::timeout(ctx.limits.connection_timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_timeout() => {
            ctx.stats.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            ctx.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("http connection: {e}");
        }
        Err(_) => {
            ctx.stats.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Calls the router, turning a panic into a 500.
fn call(ctx: &Ctx, req: &Request) -> Response {
    match catch_unwind(AssertUnwindSafe(|| (ctx.router)(req))) {
        Ok(r) => r,
        Err(p) => {
            ctx.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
            let msg = panic_message(&*p);
            tracing::error!("HTTP handler for {} panicked: {msg}", req.path);
            Response::error(500, format!("internal error while serving {}", req.path))
        }
    }
}

async fn handle(ctx: &Arc<Ctx>, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return to_hyper(
            Response::error(405, "only GET and HEAD are supported"),
            false,
        );
    }
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let request = Request::new(req.method().as_str(), target).with_accept(accept);
    drop(req);
    let response = if ctx.limits.inline_paths.contains(&request.path.as_str()) {
        call(ctx, &request)
    } else {
        let slots = if request.path.starts_with("/api/") {
            &ctx.api_slots
        } else {
            &ctx.other_slots
        };
        match tokio::time::timeout(ctx.limits.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => {
                let ctx2 = ctx.clone();
                let job = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    call(&ctx2, &request)
                });
                match job.await {
                    Ok(r) => r,
                    Err(e) => Response::error(500, format!("internal error: {e}")),
                }
            }
            _ => {
                ctx.stats.busy.fetch_add(1, Ordering::Relaxed);
                Response::error(503, "busy: every handler slot is taken; retry shortly")
            }
        }
    };
    to_hyper(response, head)
}

fn to_hyper(r: Response, head: bool) -> hyper::Response<Full<Bytes>> {
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(r.body)
    };
    let mut out = hyper::Response::new(Full::new(body));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    out
}

/// Serves one connection whose client sends `request` and closes its
/// side, and returns every byte the server wrote back. For fuzzing and
/// tests: the same code path as a real connection, in memory.
#[doc(hidden)]
pub fn answer_raw(request: &[u8], router: Router) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for answer_raw");
    let ctx = Arc::new(Ctx::new(router, Limits::default(), Arc::default()));
    rt.block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        // The client closes its side after the request: a half-close.
        let hrt = ctx.limits.header_read_timeout;
        let task = tokio::spawn(serve_io(server, ctx, None, true, hrt));
        let (mut rd, mut wr) = tokio::io::split(client);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        });
        let _ = wr.write_all(request).await;
        let _ = wr.shutdown().await;
        let _ = task.await;
        drop(wr);
        reader.await.unwrap_or_default()
    })
}

#[cfg(test)]
mod tests;
