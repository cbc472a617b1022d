#!/usr/bin/env python3
"""Soak of `destein serve` under hostile clients (issue 27), over real sockets on 127.0.0.1.

Starts `destein serve` on models/tiny-lm, then runs normal clients (completions, one after
the other each) alone for --seconds ("quiet"), then the same clients again while hostile
ones run beside them ("hostile"):
  - 40 connections sending their headers at 1 byte/s (reconnecting when cut off),
  - 20 connections opened and left idle,
  - a client sending 20 MB chunked bodies (413 expected), one every 0.2 s after the last,
  - a client sending malformed requests, one every 20 ms after the last: bad JSON, nesting
    60,000 deep, 1e400, a wrong method, garbage request lines, a head over 16 KiB,
    Content-Length with chunked.
The hostile clients are paced: at full speed they would measure how the machine's cores
are shared between them and the server (this is Python on the same machine), not whether
they can starve it.
It prints the normal clients' latency (p50 / p99) in both phases and their ratio (target:
within 2x), the server's resident memory at the start, its peak and 5 s after the hostile
clients stop (target: back within 10 % of the start), and what the hostile clients got.

  python3 benchmarks/serve_load_soak.py [--cli build/bin/destein] [--seconds 30] [--clients 4]
"""
import argparse
import http.client
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def normal_client(port, stop, latencies, failures, index):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = 0
    while not stop.is_set():
        body = json.dumps({"prompt": "The city council met on Tuesday to discuss", "max_tokens": 16,
                           "temperature": 0.9, "seed": index * 100000 + i, "ignore_eos": True})
        i += 1
        t = time.monotonic()
        try:
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                failures.append(r.status)
                continue
            latencies.append(time.monotonic() - t)
        except (OSError, http.client.HTTPException) as e:
            failures.append(str(e))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)


def run_normal(port, clients, seconds):
    stop = threading.Event()
    latencies, failures = [], []
    threads = [threading.Thread(target=normal_client, args=(port, stop, latencies, failures, c)) for c in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return latencies, failures


def count(outcomes, lock, key):
    with lock:
        outcomes[key] = outcomes.get(key, 0) + 1


def status_of(sock, timeout=10):
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    m = re.match(rb"HTTP/1\.1 (\d+)", data)
    return m.group(1).decode() if m else "closed"


def slow_loris(port, stop, outcomes, lock):
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n"
    socks = []
    while not stop.is_set():
        while len(socks) < 40:
            s = socket.create_connection(("127.0.0.1", port))
            socks.append([s, 0])
        for entry in list(socks):
            s, at = entry
            try:
                s.send(head[at:at + 1])
                entry[1] = (at + 1) % len(head)
            except OSError:
                count(outcomes, lock, "slow client cut off")
                s.close()
                socks.remove(entry)
        # A client past the header deadline reads its 408 (or the end of the stream).
        readable, _, _ = select.select([e[0] for e in socks], [], [], 0)
        for entry in [e for e in socks if e[0] in readable]:
            try:
                data = entry[0].recv(4096)
            except OSError:
                data = b""
            count(outcomes, lock, "slow client: " + (data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "closed"))
            entry[0].close()
            socks.remove(entry)
        stop.wait(1.0)
    for s, _ in socks:
        s.close()


def idle_connections(port, stop):
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    stop.wait()
    for s in socks:
        s.close()


def chunked_flood(port, stop, outcomes, lock):
    piece = b"%x\r\n%s\r\n" % (64 * 1024, b"a" * 64 * 1024)
    while not stop.is_set():
        s = socket.create_connection(("127.0.0.1", port))
        try:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            s.sendall(b"c\r\n{\"prompt\": \"\r\n")
            for _ in range(20 * 16):  # 20 MB
                s.sendall(piece)
        except OSError:
            pass
        count(outcomes, lock, "20 MB chunked: " + status_of(s))
        s.close()
        stop.wait(0.2)


def malformed(port, stop, outcomes, lock):
    deep = "[" * 60000 + "1" + "]" * 60000
    bodies = ["{not json", '{"prompt": ' + deep + "}", '{"prompt": "x", "temperature": 1e400}',
              '{"prompt": "x", "stop": ' + deep + "}", '{"prompt": "x", "n": 1000}']
    raw = [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /v1/completions HTTP/1.1\r\n\r\n",
           b"POST /v1/completions HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
           b"POST /v1/completions HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
           b"\x00\xff\x10\r\n\r\n"]
    i = 0
    while not stop.is_set():
        s = socket.create_connection(("127.0.0.1", port))
        if i % 2 == 0:
            b = bodies[(i // 2) % len(bodies)].encode()
            req = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        else:
            req = raw[(i // 2) % len(raw)]
        i += 1
        try:
            s.sendall(req)
        except OSError:
            pass
        count(outcomes, lock, "malformed: " + status_of(s))
        s.close()
        stop.wait(0.02)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser()
    p.add_argument("--cli", default=os.path.join(root, "build/bin/destein"))
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--clients", type=int, default=4)
    a = p.parse_args()
    server = subprocess.Popen([a.cli, "serve", "--model", os.path.join(root, "models/tiny-lm"), "--port", "0",
                               "--max-rows", "8", "--max-queue", "16", "--http-threads", "16",
                               "--header-timeout", "5", "--body-timeout", "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            sys.exit(f"serve_load_soak: the server did not start: {line}")
        port = int(m.group(1))
        run_normal(port, a.clients, 3)  # warm-up
        quiet, quiet_failures = run_normal(port, a.clients, a.seconds)
        rss_start = rss_kb(server.pid)

        stop = threading.Event()
        outcomes, lock = {}, threading.Lock()
        hostile = [threading.Thread(target=slow_loris, args=(port, stop, outcomes, lock)),
                   threading.Thread(target=idle_connections, args=(port, stop)),
                   threading.Thread(target=chunked_flood, args=(port, stop, outcomes, lock)),
                   threading.Thread(target=malformed, args=(port, stop, outcomes, lock))]
        for t in hostile:
            t.start()
        peak = [rss_start]
        watching = threading.Event()

        def watch():
            while not watching.is_set():
                peak[0] = max(peak[0], rss_kb(server.pid))
                watching.wait(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(2)  # the hostile clients are in place
        loud, loud_failures = run_normal(port, a.clients, a.seconds)
        stop.set()
        for t in hostile:
            t.join()
        time.sleep(5)
        watching.set()
        watcher.join()
        rss_end = rss_kb(server.pid)
        alive = server.poll() is None

        print(f"normal clients: {a.clients}, each sending 16-token completions one after the other, {a.seconds:.0f} s per phase")
        for label, lat, fail in (("quiet", quiet, quiet_failures), ("with hostile clients", loud, loud_failures)):
            print(f"{label:<22} {len(lat):>5} requests  p50 {percentile(lat, 0.5) * 1000:7.1f} ms  "
                  f"p99 {percentile(lat, 0.99) * 1000:7.1f} ms  failed {len(fail)}{' ' + str(fail[:3]) if fail else ''}")
        ratio50 = percentile(loud, 0.5) / percentile(quiet, 0.5)
        ratio99 = percentile(loud, 0.99) / percentile(quiet, 0.99)
        print(f"latency ratio (hostile / quiet): p50 {ratio50:.2f}x, p99 {ratio99:.2f}x (target: within 2x)")
        print(f"resident memory: start {rss_start / 1024:.1f} MB, peak {peak[0] / 1024:.1f} MB, 5 s after "
              f"{rss_end / 1024:.1f} MB ({(rss_end - rss_start) / rss_start * 100:+.1f} %; target within 10 %)")
        print("hostile clients got: " + ", ".join(f"{k} x{v}" for k, v in sorted(outcomes.items())))
        print(f"server still running: {alive}")
        return 0 if alive and not loud_failures and ratio50 <= 2 and abs(rss_end - rss_start) <= 0.1 * rss_start else 1
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
