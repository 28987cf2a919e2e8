#!/usr/bin/env python3
"""The event bus's speed: batched publishing, delivery to one Server-Sent
Events subscriber, and publish-to-delivery latency at 1,000 events/s.

Starts its own `quern server` (the binary given, default
target/release/quern) on a fresh data directory. Standard library only.

    cargo build --release -p quern
    python3 bench/scripts/events.py [$CARGO_TARGET_DIR/release/quern] [EVENTS]
"""
import http.client, json, multiprocessing, socket, subprocess, sys, tempfile, time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/quern"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
BATCH = 1_000

data = tempfile.mkdtemp(prefix="quern-events-bench-")
server = subprocess.Popen([binary, "server", "--listen", "127.0.0.1:0", "--data", data],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
host, port = server.stdout.readline().strip().removeprefix("listening on http://").rsplit(":", 1)
port = int(port)

def publisher():
    return http.client.HTTPConnection(host, port)

def post(c, body):
    c.request("POST", "/v1/events", json.dumps(body), {"content-type": "application/json"})
    r = c.getresponse(); out = r.read()
    if r.status != 201:
        raise SystemExit(f"publish: {r.status} {out[:200]}")

def stream(after, want, on_data=None):
    """Reads the SSE stream after `after` until `want` events came; answers
    the seconds it took from the first byte."""
    s = socket.create_connection((host, port))
    s.sendall(f"GET /v1/events/stream?after={after} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    seen, tail, start, pending = 0, b"", None, b""
    while seen < want:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        start = start or time.perf_counter()
        if on_data:
            pending += chunk
            *frames, pending = pending.split(b"\n\n")
            for f in frames:
                for line in f.split(b"\n"):
                    if line.startswith(b"data:"):
                        on_data(json.loads(line[5:])); seen += 1
        else:
            both = tail + chunk
            seen += both.count(b"\ndata:") - tail.count(b"\ndata:")
            tail = both[-8:]
    s.close()
    return time.perf_counter() - (start or time.perf_counter())

try:
    # 1. Batched publishing from one connection.
    c = publisher()
    body = {"events": [{"type": "bench.event", "source": "bench", "payload": {"n": i}} for i in range(BATCH)]}
    t = time.perf_counter()
    for _ in range(N // BATCH):
        post(c, body)
    pub = time.perf_counter() - t
    print(f"publish: {N} events in batches of {BATCH}: {pub:.2f} s, {N / pub:,.0f} events/s")

    # 2. One SSE subscriber reading the whole log from the start.
    took = stream(0, N)
    print(f"SSE delivery: {N} events to one subscriber: {took:.2f} s, {N / took:,.0f} events/s")

    # 3. Latency: one event every millisecond, stamped when sent; the
    # subscriber runs in its own process so that the two never wait for one
    # another's interpreter lock.
    count = 5_000
    parent, child = multiprocessing.Pipe()
    def subscribe(conn):
        lat = []
        stream(N, count, lambda e: lat.append(time.time_ns() - e["payload"]["t"]))
        conn.send(lat)
    reader = multiprocessing.Process(target=subscribe, args=(child,))
    reader.start()
    time.sleep(0.5)
    c = publisher()
    next_at = time.perf_counter()
    for i in range(count):
        post(c, {"type": "bench.latency", "source": "bench", "payload": {"t": time.time_ns()}})
        next_at += 0.001
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    lat = sorted(parent.recv() if parent.poll(30) else [])
    reader.join(timeout=5)
    ms = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6
    print(f"latency at ~1,000 events/s ({len(lat)} events): p50 {ms(0.5):.2f} ms, p99 {ms(0.99):.2f} ms, max {lat[-1] / 1e6:.2f} ms")
finally:
    server.terminate(); server.wait()
