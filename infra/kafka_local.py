"""A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, for tests, the demo and benches.

The jars come from Maven Central through the machine's Maven, once, into ``.cache/kafka/<version>``
(git-ignored). ``start`` formats a fresh KRaft log directory, launches broker+controller on free
ports, waits until the broker answers, and returns a handle whose ``stop`` ends it by PID.

Command line::

    python -m infra.kafka_local fetch            # download the jars only
    python -m infra.kafka_local start --state DIR  # start; prints bootstrap servers, writes DIR/pid
    python -m infra.kafka_local stop --state DIR   # stop the broker started with that DIR
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = os.environ.get("EVENTVAULT_TEST_KAFKA_VERSION", "4.4.0")
LOG4J_VERSION = "2.24.3"
REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / ".cache" / "kafka"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>eventvault.local</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
      <!-- the API of the command-line tools; the broker does not use it, and 4.4.0 lacks it -->
      <exclusions><exclusion><groupId>org.apache.kafka</groupId>
        <artifactId>kafka-tools-api</artifactId></exclusion></exclusions></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>2.0.16</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="${sys:kafka.logs.dir}/server.log">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers><Root level="INFO"><AppenderRef ref="file"/></Root></Loggers>
</Configuration>
"""


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """Download Kafka ``version`` and a log4j binding into the cache once; return the libs dir."""
    home = CACHE / version
    libs = home / "libs"
    marker = home / ".complete"
    if marker.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
    # Maven writes colour resets (ESC [0m) even with -q -B: its output is shown only if it fails.
    done = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        check=False, capture_output=True, text=True,
    )
    if done.returncode:
        sys.stderr.write(re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr))
        raise subprocess.CalledProcessError(done.returncode, done.args)
    marker.write_text(version)
    return libs


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A running broker: its bootstrap address, process and state directory."""

    bootstrap: str
    pid: int
    state_dir: Path
    version: str
    proc: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker by PID (SIGTERM, then SIGKILL after ``timeout``)."""
        stop_pid(self.pid, timeout)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1)


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """Terminate process ``pid`` and wait for it; kill it if it does not exit in time."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    return waited == 0


def _properties(port: int, cport: int, log_dir: Path,
                extra: dict[str, str] | None = None) -> str:
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{cport}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={log_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        # abort transactions past their timeout within a second (default 10 s): replay tests
        # use short transaction timeouts
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        # Archives must accept any timestamp a producer may send (year 9999 included).
        "log.message.timestamp.after.max.ms=9223372036854775807",
        "log.message.timestamp.before.max.ms=9223372036854775807",
        "message.max.bytes=8388608",
        *(f"{name}={value}" for name, value in (extra or {}).items()),
        "",
    ])


def _java(libs: Path, main: str, *args: str, log_dir: Path) -> list[str]:
    return [
        shutil.which("java") or "java", "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
        f"-Dkafka.logs.dir={log_dir}", f"-Dlog4j2.configurationFile={log_dir / 'log4j2.xml'}",
        "-cp", f"{libs}/*", main, *args,
    ]


def _cluster_id() -> str:
    """A random KRaft cluster id that does not start with "-".

    The storage tool would read such an id as an option; Kafka's own Uuid.randomUuid()
    avoids them for the same reason.
    """
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


def start(state_dir: Path | None = None, version: str = KAFKA_VERSION,
          timeout: float = 90.0, extra_properties: dict[str, str] | None = None) -> Broker:
    """Format storage and start a broker+controller; return once it accepts connections.

    ``extra_properties`` are added to (or override) the broker's server.properties.
    """
    libs = fetch_jars(version)
    state = Path(state_dir or tempfile.mkdtemp(prefix="eventvault-kafka-"))
    if state.exists():
        shutil.rmtree(state)
    (state / "data").mkdir(parents=True)
    port, cport = free_port(), free_port()
    props = state / "server.properties"
    props.write_text(_properties(port, cport, state / "data", extra_properties))
    (state / "log4j2.xml").write_text(_LOG4J2)
    cluster = _cluster_id()
    subprocess.run(
        _java(libs, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(props),
              log_dir=state),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with (state / "stdout.log").open("wb") as out:
        proc = subprocess.Popen(
            _java(libs, "kafka.Kafka", str(props), log_dir=state),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    (state / "pid").write_text(str(proc.pid))
    bootstrap = f"127.0.0.1:{port}"
    (state / "bootstrap").write_text(bootstrap)
    broker = Broker(bootstrap, proc.pid, state, version, proc)
    try:
        _wait_ready(broker, timeout)
    except BaseException:
        broker.stop()
        raise
    return broker


def _wait_ready(broker: Broker, timeout: float) -> None:
    """Wait until the broker log says it started and its port accepts connections."""
    deadline = time.monotonic() + timeout
    host, port = broker.bootstrap.split(":")
    log = broker.state_dir / "server.log"
    while time.monotonic() < deadline:
        if broker.proc is not None and broker.proc.poll() is not None:
            raise RuntimeError(f"Kafka exited early; see {broker.state_dir}/stdout.log")
        started = log.exists() and "Kafka Server started" in log.read_text(errors="replace")
        if started:
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
                return
        time.sleep(0.2)
    raise TimeoutError(f"Kafka did not start within {timeout}s; see {broker.state_dir}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry: fetch, start or stop."""
    parser = argparse.ArgumentParser(prog="python -m infra.kafka_local")
    parser.add_argument("action", choices=["fetch", "start", "stop"])
    parser.add_argument("--state", type=Path, default=REPO_ROOT / ".cache" / "broker")
    parser.add_argument("--version", default=KAFKA_VERSION)
    args = parser.parse_args(argv)
    if args.action == "fetch":
        print(fetch_jars(args.version))
    elif args.action == "start":
        broker = start(args.state, args.version)
        if broker.proc is not None:
            broker.proc = None  # leave it running after we exit
        print(broker.bootstrap)
    else:
        pid_file = args.state / "pid"
        if pid_file.exists():
            stop_pid(int(pid_file.read_text()))
            pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
