use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use super::*;
use crate::http::client;

fn router() -> Router {
    Arc::new(|req: &Request| match req.path.as_str() {
        "/hello" => Response::text(200, format!("hi {}", req.param("who").unwrap_or("?"))),
        "/healthz" => Response::text(200, "ok\n"),
        "/boom" => panic!("handler bug"),
        _ => Response::error(404, format!("no such path {}", req.path)),
    })
}

fn start(limits: Limits) -> HttpServer {
    HttpServer::start("127.0.0.1:0".parse().unwrap(), router(), limits).unwrap()
}

const T: Duration = Duration::from_secs(5);

#[test]
fn serves_and_stops() {
    let server = start(Limits::default());
    let addr = server.local_addr();
    let r = client::get(addr, "/hello?who=a%20b", T).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "hi a b"));
    let r = client::get(addr, "/nope", T).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no such path"));
    server.stop();
    assert!(client::get(addr, "/hello", Duration::from_millis(300)).is_err());
}

#[test]
fn the_percent_escape_that_panicked_the_old_server_is_harmless() {
    let out = answer_raw(b"GET /%a\xc3\xa9 HTTP/1.1\r\n\r\n", router());
    let text = String::from_utf8_lossy(&out);
    // hyper takes the raw bytes as a path that matches no route.
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    // Over a socket too, and the server answers afterwards.
    let server = start(Limits::default());
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"GET /%a\xc3\xa9 HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let r = client::get(server.local_addr(), "/healthz", T).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_panicking_handler_answers_500_and_the_server_goes_on() {
    let server = start(Limits::default());
    let addr = server.local_addr();
    let r = client::get(addr, "/boom", T).unwrap();
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(server.stats().handler_panics.load(Ordering::Relaxed), 1);
    assert_eq!(client::get(addr, "/hello", T).unwrap().status, 200);
}

#[test]
fn a_panic_of_the_server_loop_is_caught_and_the_loop_restarted() {
    let server = start(Limits::default());
    let addr = server.local_addr();
    server.inject_panic();
    // This connection hits the panic: no answer.
    assert!(client::get(addr, "/hello", Duration::from_secs(2)).is_err());
    let t0 = Instant::now();
    loop {
        if let Ok(r) = client::get(addr, "/hello", Duration::from_secs(1)) {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "not restarted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.stats().restarts.load(Ordering::Relaxed), 1);
}

#[test]
fn only_get_and_head() {
    let out = answer_raw(
        b"POST /hello HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        router(),
    );
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 405"));
    let out = answer_raw(b"HEAD /hello HTTP/1.1\r\n\r\n", router());
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body for HEAD: {text}");
}

#[test]
fn oversized_heads_are_refused() {
    let mut req = b"GET /hello HTTP/1.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let out = answer_raw(&req, router());
    let text = String::from_utf8_lossy(&out);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn idle_connections_and_slow_clients_do_not_block_healthz() {
    let server = start(Limits {
        header_read_timeout: Duration::from_secs(2),
        ..Limits::default()
    });
    let addr = server.local_addr();
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // A slowloris client: half a request line.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /hel").unwrap();
    idle.push(slow);
    let t0 = Instant::now();
    let r = client::get(addr, "/healthz", T).unwrap();
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The header-read timeout closes the silent ones.
    let mut buf = [0u8; 256];
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = idle[0].read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    // The counter moves just after the close the client saw.
    let t0 = Instant::now();
    while server.stats().timed_out.load(Ordering::Relaxed) == 0 {
        assert!(t0.elapsed() < T, "no timeout counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn silent_connections_wait_without_buffers_and_a_request_is_served() {
    let server = start(Limits {
        header_read_timeout: Duration::from_secs(5),
        ..Limits::default()
    });
    let addr = server.local_addr();
    let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // All of them wait for their first byte, none went on to hyper (whose
    // buffers come with the connection): they stay counted as waiting.
    let stats = server.stats();
    let t0 = Instant::now();
    while stats.awaiting_first_byte.load(Ordering::Relaxed) < 50 {
        assert!(t0.elapsed() < T, "accepted connections were not waiting");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stats.awaiting_first_byte.load(Ordering::Relaxed), 50);
    // A request on one of them is served as before.
    let mut idle = idle.into_iter();
    let mut c = idle.next().unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    assert_eq!(stats.awaiting_first_byte.load(Ordering::Relaxed), 49);
    // One closed without a byte is dropped: no longer waiting.
    drop(idle.next());
    let t0 = Instant::now();
    while stats.awaiting_first_byte.load(Ordering::Relaxed) > 48 {
        assert!(
            t0.elapsed() < T,
            "a closed connection still counted as waiting"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn connections_beyond_the_limit_are_closed_not_queued() {
    let server = start(Limits {
        max_connections: 4,
        ..Limits::default()
    });
    let addr = server.local_addr();
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(addr).unwrap();
    extra.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(extra.read(&mut buf).unwrap_or(0), 0, "closed at once");
    assert!(server.stats().rejected.load(Ordering::Relaxed) >= 1);
    drop(held);
    let t0 = Instant::now();
    while client::get(addr, "/healthz", T).is_err() {
        assert!(t0.elapsed() < T);
        std::thread::sleep(Duration::from_millis(50));
    }
}
