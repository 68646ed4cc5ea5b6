"""Helpers for integration checks written in Python (stdlib only).

Checks print the line protocol of scripts/run-tests.sh: "PASS: name",
"FAIL: name: why", "SKIP: name: why".
"""
import http.client
import json
import socket
import sys
import time

FAILS = 0


def ok(name):
    print(f"PASS: {name}", flush=True)


def fail(name, why=""):
    global FAILS
    FAILS += 1
    print(f"FAIL: {name}: {why}"[:2000], flush=True)


def check(name, cond, why=""):
    if cond:
        ok(name)
    else:
        fail(name, why)
    return cond


def check_eq(name, want, got):
    return check(name, want == got, f"expected {want!r}, got {got!r}")


def request(host, port, method, path, body=None, headers=None, timeout=60):
    """One HTTP request; returns (status, headers dict (lower-case), body bytes)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hdrs, out


def post_json(host, port, path, body, headers=None, timeout=60):
    st, h, out = request(host, port, "POST", path, body, headers, timeout)
    try:
        js = json.loads(out)
    except ValueError:
        js = None
    return st, h, js


def stream(host, port, path, body, headers=None, timeout=60):
    """POST with stream=true; returns (status, headers, [chunk objects], saw_done, arrival times)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request("POST", path, body=json.dumps(body).encode(), headers=h)
    r = c.getresponse()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    chunks, done, times = [], False, []
    if r.status != 200:
        out = r.read()
        c.close()
        return r.status, hdrs, [json.loads(out)], False, []
    buf = b""
    while True:
        piece = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not piece:
            break
        buf += piece
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if line.startswith(b"data: "):
                    payload = line[6:]
                    times.append(time.monotonic())
                    if payload == b"[DONE]":
                        done = True
                    else:
                        chunks.append(json.loads(payload))
    c.close()
    return r.status, hdrs, chunks, done, times


def admin(sock_path, command, timeout=10):
    """One admin-socket command; returns the reply text (without the final empty line)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(command.encode() + b"\n")
    buf = b""
    while not (buf.endswith(b"\n\n") or buf == b"\n"):
        part = s.recv(65536)
        if not part:
            break
        buf += part
    s.close()
    return buf.decode()[:-1]


def done():
    sys.exit(1 if FAILS else 0)
