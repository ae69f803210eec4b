"""Progress in a log: whole lines, only for work long enough to need them."""

from __future__ import annotations

import io

from worldsim.progress import LogProgress


def test_log_progress_prints_whole_lines_only_for_long_work():
    quiet = io.StringIO()
    with LogProgress(10, "short", quiet, every=3600.0) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
    log = io.StringIO()
    with LogProgress(4, "dream", log, every=0.0) as bar:
        for _ in range(4):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 5  # one per update, then the end
    assert lines[0].startswith("dream: 1/4 (25%)") and lines[-1].startswith("dream: 4/4 (100%)")
