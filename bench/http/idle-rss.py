#!/usr/bin/env python3
"""Resident memory of `selfheal watch` per held HTTP connection.

Usage: bench/http/idle-rss.py [SELFHEAL_BIN]   (default target/release/selfheal)

Starts the daemon on loopback with a throw-away store, then holds 100, 250
and 500 connections that send nothing (3 s each, under the 5 s header
timeout), and 500 that each send one byte (hyper then holds their
buffers). Prints VmRSS before, while held and after closing, and the cost
per connection. Run as root (the daemon locks its memory) with
`ulimit -n 8192`.
"""
import re
import socket
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/selfheal"
tmp = tempfile.mkdtemp()
log_path = f"{tmp}/log"
with open(log_path, "w") as log:
    daemon = subprocess.Popen(
        [binary, "watch", "--dry-run", "--store", f"{tmp}/s.db", "--listen", "127.0.0.1:0"],
        stderr=log,
        stdout=subprocess.DEVNULL,
    )
try:
    addr = None
    for _ in range(100):
        m = re.search(r"serving http://([^/]*)/", open(log_path).read())
        if m:
            addr = m.group(1)
            break
        time.sleep(0.1)
    if addr is None:
        sys.exit(f"the daemon did not start:\n{open(log_path).read()}")
    host, port = addr.rsplit(":", 1)

    def rss_kb():
        with open(f"/proc/{daemon.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    time.sleep(2)
    base = rss_kb()
    print(f"RSS before: {base / 1024:.1f} MB")
    for n, first in [(100, b""), (250, b""), (500, b""), (500, b"G")]:
        socks = [socket.create_connection((host, int(port))) for _ in range(n)]
        for s in socks:
            if first:
                s.send(first)
        time.sleep(3)
        held = rss_kb()
        for s in socks:
            s.close()
        time.sleep(1)
        what = "one byte each" if first else "silent"
        print(
            f"{n} connections, {what}: RSS {held / 1024:.1f} MB while held "
            f"({(held - base) / n:.1f} KB each over the start), "
            f"{rss_kb() / 1024:.1f} MB after closing"
        )
finally:
    daemon.terminate()
    daemon.wait(timeout=15)
