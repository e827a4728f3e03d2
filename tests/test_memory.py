"""Memory of a real archiver process: its peak RSS (VmHWM) against the budget, and its own
estimate sampled where it peaks (files in flight), not after relief."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cliutil import archiver_env, start_cli
from tests.kafkautil import Rec, create_topic, produce

pytestmark = pytest.mark.integration
BUDGET = 16 << 20


def _high_water_mark(pid: int) -> int | None:
    """Peak resident set size of a process so far, in bytes (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _measured_run(env: dict[str, str], log: Path) -> tuple[int, dict[str, Any]]:
    """Run ``archive --once --output json``: (peak RSS seen, the summary)."""
    with log.open("wb") as err:
        proc = start_cli("archive", "--once", "--output", "json", env=env,
                         stdout=subprocess.PIPE, stderr=err)
    peak = 0
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, _high_water_mark(proc.pid) or 0)
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, log.read_text()[-2000:]
    return peak, json.loads(out)


def _hours_topic(bootstrap: str, records: int) -> str:
    """A topic of ``records`` records of 20 kB spread over 200 hours (late events)."""
    topic = f"mem.hours-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=2)
    base = 1_760_000_000_000
    produce(bootstrap, topic, [
        Rec(i % 2, b"%d" % i, bytes([i % 251]) * 20_000,
            timestamp_ms=base + (i * 7919 % 200) * 3_600_000) for i in range(records)])
    return topic


def test_rss_of_the_archiver_is_bounded_by_its_budget(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    """40 MB and then 80 MB of records in 200 open hours pass a 16 MiB budget. Peak RSS is
    measured above that of a run archiving ten small records. An archiver whose memory
    followed the data would need 40 MB more for the second run; allocator noise between runs
    was measured at 8-21 MiB, so the bound is two budgets. The estimate, sampled with files in
    flight, must near the budget."""
    base_topic = f"mem.base-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, base_topic)
    produce(kafka_bootstrap, base_topic, [Rec(0, b"k", b"v" * 100) for _ in range(10)])
    settings = {"MEMORY_BUDGET_BYTES": str(BUDGET), "MAX_CUTS_PER_PARTITION": "100"}
    baseline, _ = _measured_run(archiver_env(kafka_bootstrap, f"file://{tmp_path}/b",
                                             base_topic, **settings), tmp_path / "base.log")
    growth = {}
    for records in (2000, 4000):
        topic = _hours_topic(kafka_bootstrap, records)
        peak, summary = _measured_run(archiver_env(kafka_bootstrap, f"file://{tmp_path}/a",
                                                   topic, **settings), tmp_path / "big.log")
        growth[records] = peak - baseline
        print(f"{records} records of 20 kB: baseline RSS {baseline >> 20} MiB, peak "
              f"{peak >> 20} MiB, growth {growth[records] >> 20} MiB; estimate peak "
              f"{summary['peak_buffered_bytes'] >> 20} MiB; budget {BUDGET >> 20} MiB")
        assert summary["records"] == records
        assert summary["peak_buffered_bytes"] > BUDGET // 2, "the budget was never approached"
    assert growth[4000] - growth[2000] < 2 * BUDGET, "RSS grows with the data, not the budget"
    assert growth[4000] < 6 * BUDGET, "far more memory than the budget (measured: 3-4.5x)"
