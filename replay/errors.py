"""The exception root of replay (under eventvault's root, so the CLI maps its exit codes)."""

from __future__ import annotations

from eventvault.errors import EventVaultError


class ReplayError(EventVaultError):
    """A replay cannot go on; ``replay_id`` names it when it has one."""

    exit_code = 6


class PreflightError(ReplayError):
    """The target cannot take the selection as asked; nothing was produced."""

    exit_code = 6

    @classmethod
    def of(cls, fatal: list[str]) -> PreflightError:
        """The refusal for preflight's ``fatal`` findings (one line: the first, and a count)."""
        more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
        return cls(f"replay refused: {fatal[0]}{more}", findings=fatal)


class FencedError(ReplayError):
    """Another run of the same replay id took over this run's transactional id.

    The broker fences a producer when a newer one starts with its transactional id (a second
    ``--resume ID``) and when a transaction stays open past the transaction timeout. This
    run's open transaction is aborted; the newer run goes on from the committed progress.
    """

    exit_code = 6


class ProgressLostError(ReplayError):
    """Storage shows committed transactions the target cluster has no progress for.

    Kafka deletes the replay group's offsets ``offsets.retention.minutes`` after its last
    commit (the group never has members); resuming from nothing would produce them again.
    """

    exit_code = 6


class RejectedError(ReplayError):
    """The target refused records; ``topic``, ``partition`` and ``offsets`` name them.

    Nothing of the failed transaction is visible to read_committed consumers; fix the cause
    and resume with ``--resume ID``.
    """

    exit_code = 7
