"""Starts a real `quern server` (the binary in $QUERN_BIN, else the cargo
build's) on a free port with a fresh data directory, for each test module."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest


def _binary() -> str:
    if os.environ.get("QUERN_BIN"):
        return os.environ["QUERN_BIN"]
    root = Path(__file__).resolve().parents[3]
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    for profile in ("debug", "release"):
        candidate = target / profile / "quern"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("no quern binary: build it (cargo build -p quern) or set QUERN_BIN")


@contextlib.contextmanager
def running_server(*extra: str) -> Iterator[str]:
    """A server on a free port and a fresh data directory, with extra flags; its URL."""
    data = tempfile.mkdtemp(prefix="quern-sdk-test-")
    proc = subprocess.Popen(
        [_binary(), "server", "--listen", "127.0.0.1:0", "--data", data, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    try:
        yield line.removeprefix("listening on ").rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with running_server() as url:
        yield url
