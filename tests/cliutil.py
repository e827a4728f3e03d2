"""Helpers for tests that run the ``eventvault`` command as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EVENTVAULT = [sys.executable, "-m", "eventvault"]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its EVENTVAULT_* variables, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("EVENTVAULT_")}
    full.update(env or {})
    return full


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``eventvault ARGS`` to the end; its output as text."""
    return subprocess.run([*EVENTVAULT, *args], check=False, env=cli_env(env), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              **popen: Any) -> subprocess.Popen[Any]:
    """Start ``eventvault ARGS`` in the background."""
    return subprocess.Popen([*EVENTVAULT, *args], env=cli_env(env), cwd=cwd, **popen)


def archiver_env(bootstrap: str, url: str, topic: str, **archive: str) -> dict[str, str]:
    """Environment for an archiver process with small files, fast timers and commits."""
    settings = {"IDLE_SECONDS": "0.3", "COMMIT_INTERVAL_SECONDS": "0.5",
                "SESSION_TIMEOUT_MS": "6000", **archive}
    return {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "EVENTVAULT_STORAGE__URL": url,
            "EVENTVAULT_ARCHIVE__TOPICS": json.dumps([topic]),
            "EVENTVAULT_ARCHIVE__GROUP_ID": f"g-{topic}",
            **{f"EVENTVAULT_ARCHIVE__{k}": v for k, v in settings.items()}}
