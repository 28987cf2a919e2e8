"""``python -m quern worker MODULE:APP [--queues a,b] [--concurrency N] [--allow-import PREFIX,…]
[--lease-key-file FILE]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ._worker import Worker, load_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quern")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run an app's tasks")
    w.add_argument("app", help="module:attribute of a quern.App, e.g. myapp.tasks:app")
    w.add_argument("--queues", default="default", help="comma-separated queues (default: default)")
    w.add_argument("--concurrency", type=int, default=8)
    w.add_argument(
        "--allow-import", default="", help="comma-separated module prefixes whose functions may run by import path"
    )
    w.add_argument("--lease", type=float, default=30.0, help="lease length in seconds")
    w.add_argument("--grace", type=float, default=30.0, help="seconds running tasks get to finish on SIGTERM")
    w.add_argument("--server", default=None, help="server URL (default $QUERN_URL)")
    w.add_argument("--id", default=None, help="worker id")
    w.add_argument(
        "--lease-key-file",
        default=None,
        help="run only tasks whose lease is signed by a key in this file (default $QUERN_LEASE_KEY_FILE)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("QUERN_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per request (every lease, heartbeat and watch) is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.path.insert(0, os.getcwd())
    app = load_app(args.app)
    if args.server:
        from ._client import Quern

        app.client = Quern(args.server)
    try:
        worker = Worker(
            app,
            args.queues.split(","),
            args.concurrency,
            args.allow_import.split(","),
            args.lease,
            args.grace,
            args.id,
            args.lease_key_file,
        )
    except ValueError as e:
        print(f"python -m quern worker: lease key file: {e}", file=sys.stderr)
        return 2
    worker.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
