"""Lease signatures, against a real server started with ``--lease-key-file``:
the SDK's canonical digest equals the server's for awkward inputs, and a
worker holding the key refuses a task that a proxy rewrote on the way, where
a worker without it runs the rewritten task."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import httpx
import pytest
from conftest import running_server

from quern._integrity import KeyFileError, LeaseKeys, spec_digest

HERE = Path(__file__).resolve().parent
SECRET = "py-lease-key-3c1f9e7a5b2d4f6e8a0c1b3d5f7e9a2c"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "lease.keys"
    path.write_text(f"# lease key\n{SECRET}\n")
    return str(path)


@pytest.fixture(scope="module")
def signed_url(key_file: str) -> Iterator[str]:
    with running_server("--lease-key-file", key_file) as url:
        yield url


def rewriting_proxy(upstream: str, old: bytes, new: bytes) -> str:
    """A TCP proxy to ``upstream`` that rewrites ``old`` to ``new`` (same
    length) in the server's answers; its URL."""
    assert len(old) == len(new)
    host, port = upstream.removeprefix("http://").split(":")
    listener = socket.create_server(("127.0.0.1", 0))

    def pipe(src: socket.socket, dst: socket.socket, rewrite: bool) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk.replace(old, new) if rewrite else chunk)
        except OSError:
            pass
        finally:
            dst.close()

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            server = socket.create_connection((host, int(port)))
            threading.Thread(target=pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=pipe, args=(server, client, True), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def wait_done(url: str, task_id: str) -> Dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task: Dict[str, Any] = httpx.get(f"{url}/v1/tasks/{task_id}").json()
        if task["status"] in ("succeeded", "failed"):
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} not done: {task}")


def submit(url: str, spec: Dict[str, Any]) -> str:
    r = httpx.post(f"{url}/v1/tasks", json=spec)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_the_sdk_digests_tasks_as_the_server_does(signed_url: str) -> None:
    inputs: list[Any] = [
        {"floats": [0.1, 1e-5, 1.25e-5, 1e-7, 1.5e-7, 0.0001, 100.0, 1e15, 1e16, 1e22, 2.5e30, 5e-324, -0.0]},
        {"ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30]},
        {"text": 'quote " back \\ tab \t nl \n ctl \x01 \x1f del \x7f é ✓ 😀', "z": None, "a": [True, False]},
        {"é": 1, "e": 2, "Z": 3, "😀": 4, "\u00ff": 5},
        [1.7976931348623157e308, 12345678901234567.0, 1234567890123456.0],
        "plain",
        None,
    ]
    for value in inputs:
        spec = {
            "name": "digest.check",
            "queue": "digest-check",
            "input": value,
            "priority": -3,
            "metadata": {"b": "2", "a": "ü"},
            "max_attempts": 4,
            "timeout_ms": 1500,
            "retry": {"backoff": "fixed", "initial_ms": 10, "max_ms": 20, "jitter": 0.25},
        }
        task = httpx.get(f"{signed_url}/v1/tasks/{submit(signed_url, spec)}").json()
        assert spec_digest(task) == task["digest"], value
    task = httpx.get(f"{signed_url}/v1/tasks/{submit(signed_url, {'name': 'digest.check', 'queue': 'x'})}").json()
    assert spec_digest(task) == task["digest"], "defaults"


def test_key_files_hold_long_secrets(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        LeaseKeys.parse("# nothing\n")
    with pytest.raises(KeyFileError, match="line 2"):
        LeaseKeys.parse(f"{SECRET}\nshort\n")
    assert len(LeaseKeys.parse(f"{SECRET}\n{SECRET[::-1]}\n").ids) == 2


def test_a_worker_holding_the_key_refuses_a_rewritten_task(signed_url: str, key_file: str) -> None:
    proxy = rewriting_proxy(signed_url, b"pay-alice", b"pay-mally")
    env = {**os.environ, "QUERN_URL": proxy, "PYTHONPATH": str(HERE), "QUERN_LEASE_KEY_FILE": key_file}
    cmd = [sys.executable, "-m", "quern", "worker", "tasks_app:app", "--queues", "pay", "--lease", "3"]
    keyed = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ok = wait_done(signed_url, submit(signed_url, {"name": "t.echo", "queue": "pay", "input": ["pay-bob"]}))
        assert ok["status"] == "succeeded" and ok["result"] == "pay-bob", ok
        bad = wait_done(signed_url, submit(signed_url, {"name": "t.echo", "queue": "pay", "input": ["pay-alice"]}))
        assert bad["status"] == "failed", bad
        assert bad["error"]["kind"] == "rejected" and bad["error"]["details"]["reason"] == "integrity", bad
        assert "changed on the way" in bad["error"]["message"]
    finally:
        keyed.terminate()
        keyed.wait(timeout=20)

    env.pop("QUERN_LEASE_KEY_FILE")
    keyless = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ran = wait_done(signed_url, submit(signed_url, {"name": "t.echo", "queue": "pay", "input": ["pay-alice"]}))
        assert ran["status"] == "succeeded" and ran["result"] == "pay-mally", "the proxy rewrote the input"
    finally:
        keyless.terminate()
        keyless.wait(timeout=20)


def test_a_bad_key_file_stops_the_worker_at_start(signed_url: str, tmp_path: Path) -> None:
    short = tmp_path / "short.keys"
    short.write_text("too-short\n")
    env = {**os.environ, "QUERN_URL": signed_url, "PYTHONPATH": str(HERE)}
    out = subprocess.run(
        [sys.executable, "-m", "quern", "worker", "tasks_app:app", "--lease-key-file", str(short)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "lease key file" in out.stderr, out.stderr
