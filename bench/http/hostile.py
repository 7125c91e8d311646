#!/usr/bin/env python3
"""Hostile clients against a running `selfheal watch`, and the latency of
/healthz and /metrics meanwhile.

Holds IDLE idle connections (reconnecting those the server's header
timeout closes), SLOW slowloris connections (one header byte per second),
and sends a stream of garbage requests (random bytes, the 22-byte request
that used to panic the HTTP thread, huge headers, bad query strings).
Every 100 ms it GETs /healthz or /metrics (alternately) on a fresh
connection and records the latency; once a second it records the daemon's
RSS. Prints a summary and one JSON line.

    hostile.py ADDR PID [SECONDS] [IDLE] [SLOW]

Traffic goes only to ADDR, which must be a loopback address; every loop
is bounded by SECONDS.
"""
import json
import os
import random
import socket
import sys
import threading
import time

addr_s, pid = sys.argv[1], int(sys.argv[2])
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60
n_idle = int(sys.argv[4]) if len(sys.argv) > 4 else 500
n_slow = int(sys.argv[5]) if len(sys.argv) > 5 else 50
host, port = addr_s.rsplit(":", 1)
addr = (host, int(port))
assert host.startswith("127.") or host in ("::1", "localhost"), "loopback only"
end = time.monotonic() + seconds
rng = random.Random(17)
stats = {"idle_reconnects": 0, "slow_reconnects": 0, "garbage_sent": 0,
         "garbage_answers": {}, "connect_errors": 0}
lock = threading.Lock()


def connect(timeout=5):
    s = socket.create_connection(addr, timeout=timeout)
    s.setblocking(False)
    return s


def closed(s):
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def hold_idle():
    socks = []
    while time.monotonic() < end:
        socks = [s for s in socks if not closed(s) or s.close()]
        while len(socks) < n_idle and time.monotonic() < end:
            try:
                socks.append(connect())
                with lock:
                    stats["idle_reconnects"] += 1
            except OSError:
                with lock:
                    stats["connect_errors"] += 1
                time.sleep(0.05)
                break
        time.sleep(0.2)
    for s in socks:
        s.close()


def slowloris():
    socks = []
    while time.monotonic() < end:
        socks = [s for s in socks if not closed(s) or s.close()]
        while len(socks) < n_slow:
            try:
                s = connect()
                s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
                with lock:
                    stats["slow_reconnects"] += 1
            except OSError:
                break
        for s in socks:
            try:
                s.send(b"X")
            except OSError:
                pass
        time.sleep(1.0)
    for s in socks:
        s.close()


GARBAGE = [
    lambda: b"GET /%a\xc3\xa9 HTTP/1.1\r\n\r\n",
    lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2048))),
    lambda: b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    lambda: b"GET /api/events?since=%ff%fe&kind=%c3&limit=99999999999999999999 HTTP/1.1\r\n\r\n",
    lambda: b"GET /api/events?since=" + b"9" * 5000 + b" HTTP/1.1\r\n\r\n",
    lambda: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),
    lambda: b"POST /metrics HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 5000,
    lambda: b"GET " + b"/" * 20000 + b" HTTP/1.1\r\n\r\n",
]


def garbage():
    while time.monotonic() < end:
        payload = rng.choice(GARBAGE)()
        try:
            s = socket.create_connection(addr, timeout=2)
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            try:
                head = s.recv(12)
            except OSError:
                head = b""
            s.close()
            key = head[9:12].decode("latin-1") if head.startswith(b"HTTP/") else "closed"
            with lock:
                stats["garbage_sent"] += 1
                stats["garbage_answers"][key] = stats["garbage_answers"].get(key, 0) + 1
        except OSError:
            with lock:
                stats["connect_errors"] += 1
        time.sleep(0.02)


def get(path):
    t0 = time.monotonic()
    try:
        s = socket.create_connection(addr, timeout=5)
        s.settimeout(5)
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    return time.monotonic() - t0, ok


def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# HOSTILE_PARTS=idle,slow,garbage (the default: all three) picks the
# attackers, to see what each one costs the daemon.
parts = os.environ.get("HOSTILE_PARTS", "idle,slow,garbage").split(",")
attackers = {"idle": hold_idle, "slow": slowloris, "garbage": garbage}
threads = [threading.Thread(target=attackers[p], daemon=True) for p in parts if p]
for t in threads:
    t.start()
time.sleep(min(5, seconds / 4))  # let the connections build up
lat = {"/healthz": [], "/metrics": []}
fails = {"/healthz": 0, "/metrics": 0}
rss = []
i = 0
next_rss = 0.0
while time.monotonic() < end:
    path = "/healthz" if i % 2 == 0 else "/metrics"
    i += 1
    dt, ok = get(path)
    lat[path].append(dt)
    fails[path] += 0 if ok else 1
    if time.monotonic() >= next_rss:
        rss.append(rss_kb())
        next_rss = time.monotonic() + 1
    time.sleep(max(0, 0.1 - dt))
for t in threads:
    t.join(timeout=10)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


summary = {"seconds": seconds, "idle": n_idle, "slow": n_slow}
for path in lat:
    xs = lat[path]
    summary[path] = {"n": len(xs), "failed": fails[path], "p50_ms": round(pct(xs, 50) * 1000, 1),
                     "p99_ms": round(pct(xs, 99) * 1000, 1), "max_ms": round(max(xs) * 1000, 1)}
    print(f"{path:9} n={len(xs)} failed={fails[path]} p50={summary[path]['p50_ms']} ms "
          f"p99={summary[path]['p99_ms']} ms max={summary[path]['max_ms']} ms")
summary["rss_max_kb"] = max(rss)
summary["rss_last_kb"] = rss[-1]
summary.update(stats)
print(f"daemon RSS: max {max(rss) / 1024:.1f} MB, last {rss[-1] / 1024:.1f} MB")
print(f"hostile clients: {stats}")
print(json.dumps(summary))
