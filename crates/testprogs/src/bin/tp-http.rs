//! An HTTP server on 127.0.0.1:`--port P` that answers `200 OK` to
//! `--answer N` requests (0: forever), then stops answering: connections
//! are still accepted by the kernel but never read or answered, as in a
//! server whose worker threads are stuck.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::TcpListener;

use selfheal_testprogs::{sleep_forever, stamp, Args};

fn main() {
    let args = Args::from_env();
    let stamps = args.stamp_file();
    stamp(stamps.as_deref(), "start");
    let port = args.num("port", 0);
    let listener = TcpListener::bind(("127.0.0.1", port as u16)).expect("bind");
    println!(
        "tp-http: pid {} listening on {}",
        std::process::id(),
        listener.local_addr().expect("addr")
    );
    let answer = args.num("answer", 0);
    let mut answered = 0;
    while answer == 0 || answered < answer {
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        let mut buf = [0u8; 2048];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
        );
        answered += 1;
        stamp(stamps.as_deref(), "answer");
    }
    eprintln!("tp-http: stopped answering after {answered} requests");
    stamp(stamps.as_deref(), "silent");
    // Keep the listener open: connects succeed, answers never come.
    let _keep = listener;
    sleep_forever();
}
