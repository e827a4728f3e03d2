"""moto's S3 server mode on 127.0.0.1: a real HTTP S3 endpoint for tests and benches.

Command line::

    python -m infra.s3_local start --state DIR   # prints the endpoint URL, writes DIR/pid
    python -m infra.s3_local stop --state DIR
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from infra.kafka_local import REPO_ROOT, free_port, stop_pid


@dataclass
class S3Server:
    """A running moto server: its endpoint URL and process."""

    endpoint_url: str
    pid: int
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Stop the server by PID."""
        stop_pid(self.pid, timeout=10)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1)


def start(log_path: Path | None = None, timeout: float = 30.0) -> S3Server:
    """Start ``moto_server`` on a free port of 127.0.0.1 and wait until it answers."""
    port = free_port()
    with (log_path or Path(os.devnull)).open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{port}", proc.pid, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("moto server exited early")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return server
        time.sleep(0.1)
    server.stop()
    raise TimeoutError("moto server did not start")


def main(argv: list[str] | None = None) -> int:
    """Command line entry: start or stop."""
    parser = argparse.ArgumentParser(prog="python -m infra.s3_local")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state", type=Path, default=REPO_ROOT / ".cache" / "s3")
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    pid_file = args.state / "pid"
    if args.action == "start":
        server = start(args.state / "moto.log")
        pid_file.write_text(str(server.pid))
        print(server.endpoint_url)
    elif pid_file.exists():
        stop_pid(int(pid_file.read_text()))
        pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
