"""What people and machines see of a running archiver: JSON logs, Prometheus metrics, progress.

Logs are one JSON object per line on stderr (``ts``, ``level``, ``event`` and fields). Metrics
are served on ``metrics.host:metrics.port`` when a port is configured. A progress bar is shown
for bounded runs when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, start_http_server
from tqdm import tqdm

from eventvault.errors import EventVaultError

log = logging.getLogger("eventvault")

RECORDS = Counter("eventvault_records_archived", "Records written to archive files", ["topic"])
FILES = Counter("eventvault_files_written", "Archive files written", ["topic"])
BYTES = Counter("eventvault_bytes_written", "Bytes of archive files written", ["topic"])
BUFFERED = Gauge("eventvault_buffered_bytes", "Estimated bytes in open buffers and uploads")
COMMITTED = Gauge("eventvault_committed_offset", "Committed resume offset",
                  ["topic", "partition"])
LOST = Counter("eventvault_records_lost_to_retention",
               "Records Kafka deleted before the archiver read them", ["topic", "partition"])
LAG = Gauge("eventvault_partition_lag",
            "Records not yet durable: high watermark minus resume offset",
            ["topic", "partition"])


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={"fields": {...}}`` adds fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a log record as JSON."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": _message(record),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["error"] = _error(record.exc_info, self.formatException)
        return json.dumps(out, default=str)


def _error(exc_info: Any, traceback: Any) -> str:
    """An expected failure (an EventVaultError) as its one line, anything else as a traceback.

    aiokafka logs what a rebalance listener raised with its traceback; for eventvault's own
    errors the line is all a user needs, and the CLI prints it again as it exits.
    """
    error = exc_info[1] if isinstance(exc_info, tuple) else None
    if isinstance(error, EventVaultError):
        return f"{type(error).__name__}: {error}"
    return str(traceback(exc_info))


def _message(record: logging.LogRecord) -> str:
    """The record's message, an exception without text shown by its class name.

    aiokafka logs a connection that timed out with asyncio's TimeoutError, whose text is empty.
    """
    args = record.args
    if isinstance(args, tuple) and any(isinstance(a, BaseException) and not str(a) for a in args):
        return str(record.msg) % tuple(
            type(a).__name__ if isinstance(a, BaseException) and not str(a) else a for a in args)
    return record.getMessage()


class _Transient(logging.Filter):
    """aiokafka logs a group's first coordinator lookup, which it retries, as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "GroupCoordinatorNotAvailable" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger("eventvault").isEnabledFor(logging.INFO)
        return True


def setup_logging(level: str = "INFO") -> None:
    """Send eventvault's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_Transient())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    for name in ("aiokafka", "botocore", "boto3"):  # their warnings, as JSON lines too
        lib = logging.getLogger(name)
        lib.handlers[:] = [handler]
        lib.setLevel(max(logging.WARNING, logging.getLevelName(level)))
        lib.propagate = False


def event(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event."""
    log.log(level, msg, extra={"fields": fields})


def serve_metrics(host: str, port: int) -> None:
    """Serve Prometheus metrics in a background thread."""
    start_http_server(port, addr=host)
    event("metrics served", host=host, port=port)


class ProgressBar:
    """A progress bar on a terminal for long work; silent otherwise (and when not enabled)."""

    def __init__(self, enabled: bool = True, description: str = "archiving",
                 total: int | None = None) -> None:
        self._bar: tqdm[Any] | None = None
        self._enabled = enabled and sys.stderr.isatty()
        self._description = description
        if total is not None:
            self.total(total)

    def total(self, records: int) -> None:
        """Set (or raise) the number of records expected."""
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = tqdm(total=records, unit="rec", unit_scale=True,
                             desc=self._description, file=sys.stderr, dynamic_ncols=True)
        else:
            self._bar.total = max(self._bar.total or 0, records)
            self._bar.refresh()

    def advance(self, records: int) -> None:
        """Count records done."""
        if self._bar is not None:
            self._bar.update(records)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
