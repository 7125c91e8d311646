//! Test programs (`tp-*` binaries) and a helper to find them.
#![forbid(unsafe_code)]
