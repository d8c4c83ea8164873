"""A commit journal of this process's own, and the records of processes that died, taken over at start.

runcycles journals every commit before sending it (``CyclesConfig.journal_dir``, by default
``~/.runcycles/commit-journal`` per user) and replays what is left when an engine starts. Every
worker on a host shares that directory, so a starting worker replays commits that a live one is
still retrying, and both count them: the processes' ``cycles.client.charged`` then add up to more
than the ledger. Here each process journals under a directory of its own,
``<journal dir>/workers/<host>-<pid>-<start>/``, holding an exclusive ``flock`` on it for its
whole life (the kernel drops the lock when the process dies, SIGKILL included). A process that
starts takes over the records of every worker directory whose lock it can get, so a dead
worker's pending commits are replayed exactly once, by one live process, and counted once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any, Final

logger = logging.getLogger(__name__)

WORKERS_DIR: Final = "workers"
LOCK_FILE: Final = ".owner.lock"
RECORD_SUFFIX: Final = ".json"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one shared journal, as runcycles has it
    fcntl = None  # type: ignore[assignment]

_claimed: dict[Path, WorkerJournal] = {}
_claimed_lock = threading.Lock()


def default_base(config: Any) -> Path:
    """The journal directory ``config`` names, or runcycles' default."""
    from runcycles.journal import default_journal_dir  # type: ignore[import-untyped]

    return Path(config.journal_dir) if config.journal_dir else default_journal_dir()


@dataclasses.dataclass
class WorkerJournal:
    """This process's journal directory under ``base``; held (locked) until the process exits."""

    base: Path
    directory: Path
    pid: int = dataclasses.field(default_factory=os.getpid)
    _lock: IO[str] | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def of(cls, base: Path) -> WorkerJournal:
        """This process's worker journal under ``base`` (made and locked once), dead workers adopted."""
        base = base.expanduser().resolve()
        with _claimed_lock:
            found = _claimed.get(base)
            if found is not None and found.pid != os.getpid():
                # A forked child shares its parent's lock: let go of it, and hold a directory of its own.
                found.release()
                found = None
            if found is None:
                found = _claimed[base] = cls._claim(base)
        return found

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.close()
            self._lock = None

    @classmethod
    def _claim(cls, base: Path) -> WorkerJournal:
        if fcntl is None:
            return cls(base, base)
        name = f"{_host()}-{os.getpid()}-{time.time_ns()}"
        directory = base / WORKERS_DIR / name
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = (directory / LOCK_FILE).open("a")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            logger.warning(
                "cycles_otel: cannot hold a journal directory of this process's own under %s; "
                "journaling there directly, as runcycles does",
                base,
                exc_info=True,
            )
            return cls(base, base)
        journal = cls(base, directory, _lock=lock)
        journal.adopt_dead_workers()
        return journal

    def adopt_dead_workers(self) -> int:
        """Move the records of every worker directory whose owner is gone into ours; returns how many."""
        moved = 0
        workers = self.base / WORKERS_DIR
        with contextlib.suppress(OSError):
            for other in sorted(workers.iterdir()):
                if other != self.directory and other.is_dir():
                    moved += self._adopt(other)
        if moved:
            logger.info("cycles_otel: took over %d journaled commit(s) of stopped workers", moved)
        return moved

    def _adopt(self, other: Path) -> int:
        assert fcntl is not None
        try:
            lock = (other / LOCK_FILE).open("a")
        except OSError:
            return 0
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its owner is alive
                return 0
            moved = 0
            for record in other.glob(f"*/*{RECORD_SUFFIX}"):
                target = self.directory / record.parent.name / record.name
                try:
                    target.parent.mkdir(exist_ok=True, mode=0o700)
                    record.replace(target)
                    moved += 1
                except OSError:
                    logger.warning("cycles_otel: could not take over %s", record, exc_info=True)
            _remove_tree(other)
            return moved


def _remove_tree(directory: Path) -> None:
    """Remove an adopted worker directory: its lock, and temporary files of writes never finished."""
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            elif path.name == LOCK_FILE or path.suffix == ".tmp":
                path.unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:64] or "host"
