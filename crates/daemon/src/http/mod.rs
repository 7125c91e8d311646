//! A small HTTP/1.1 server for `/metrics`, `/healthz` and the JSON API, and
//! the client `selfheal status` uses. GET only, one connection at a time,
//! `Connection: close`: scrapes are rare and small, and a single thread with
//! short timeouts keeps the daemon's footprint and attack surface small.

pub mod client;
mod server;

pub use server::{HttpServer, Request, Response, Router};
