"""Progress of long work, on a terminal and in a log alike.

On a terminal it is tqdm's bar. Where stderr is a file or a pipe (a run in the background, ``> run.log 2>&1``), a
bar's carriage returns make one unreadable line, so the same calls print a plain line at most every
``LOG_SECONDS`` (and, if it printed any, one at the end): what, how far, how long so far and how long to go. Work
shorter than that prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

LOG_SECONDS = 30.0
"""Seconds between two progress lines in a log."""


class LogProgress:
    """tqdm's ``update`` / context-manager interface, writing whole lines to ``file``."""

    def __init__(self, total: int, desc: str, file: TextIO, every: float = LOG_SECONDS) -> None:
        self.total, self.desc, self.file, self.every = total, desc, file, every
        self.n = 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        left = elapsed * (self.total - self.n) / self.n if self.n else float("nan")
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.n}/{self.total}{share}, {elapsed:.0f} s, ~{left:.0f} s to go", file=self.file,
              flush=True)  # fmt: skip

    def close(self) -> None:
        if self.last > self.start:  # work long enough to have said how far it got says that it finished
            self._line(time.perf_counter())

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A progress bar of ``total`` steps: tqdm on a terminal, lines every ``LOG_SECONDS`` in a log, nothing when not
    ``enabled``."""
    if enabled and not sys.stderr.isatty():
        return LogProgress(total, desc, sys.stderr)
    return tqdm(total=total, desc=desc, disable=not enabled)


def report_run(command: str, summary: str, interrupted: bool, kept: str = "") -> int:
    """Print a run's summary line and return the exit code: an interrupted run says so on stderr (``kept`` says what
    was kept) and exits 130, what Ctrl-C means."""
    if interrupted:
        print(f"worldsim {command}: interrupted; {kept}{summary}", file=sys.stderr)
        return 130
    print(summary)
    return 0
