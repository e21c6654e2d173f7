"""Progress lines: the throttle, the quiet threshold, and every site that does long work."""

from __future__ import annotations

import logging

import pytest

from contrastlab import progress as progress_module
from contrastlab.progress import Progress, format_duration, quiet_progress, track

NAME = "contrastlab.progress"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def records(caplog, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == NAME and r.levelno == level]


def test_lines_are_throttled_and_the_final_line_always_comes(caplog):
    caplog.set_level(logging.DEBUG, logger=NAME)
    clock = Clock()
    with Progress("working", total=100, unit="items", clock=clock, threshold=2.0, every=5.0) as progress:
        for _ in range(100):
            clock.now += 0.25  # 25 s in all
            progress.update()
    lines = records(caplog)
    progress_lines, final = lines[:-1], lines[-1]
    # Quiet for the first 2 s, then at most one line per 5 s: at 2, 7, 12, 17, 22 s.
    assert [line.split(":")[1].split(",")[0].strip() for line in progress_lines] == [
        "8/100 items",
        "28/100 items",
        "48/100 items",
        "68/100 items",
        "88/100 items",
    ]
    assert final == "working: done, 100 items in 25 s, 4.00 items/s"
    assert not records(caplog, logging.DEBUG)


def test_eta_comes_from_the_rate_on_the_clock(caplog):
    caplog.set_level(logging.INFO, logger=NAME)
    clock = Clock()
    progress = Progress(
        "extracting features (val)", total=5000, unit="images", rate_unit="img", clock=clock, threshold=0, every=5
    )
    clock.now += 1.5
    progress.update(3000)  # 2000 img/s, 2000 left: 1 s
    assert progress.eta(clock.now) == pytest.approx(1.0)
    assert records(caplog) == ["extracting features (val): 3000/5000 images, 2000 img/s, eta 1.0 s"]
    clock.now += 10
    progress.update(1000)  # 4000 in 11.5 s, 1000 left
    assert progress.eta(clock.now) == pytest.approx(1000 / (4000 / 11.5))
    assert records(caplog)[-1].endswith("eta 2.9 s")


def test_short_work_logs_only_a_debug_line(caplog):
    caplog.set_level(logging.DEBUG, logger=NAME)
    clock = Clock()
    with Progress("tiny", total=3, clock=clock, threshold=2.0, every=0) as progress:
        for _ in range(3):
            clock.now += 0.5
            progress.update()
    assert records(caplog) == []
    assert records(caplog, logging.DEBUG) == ["tiny: done, 3 items in 1.5 s, 2.00 items/s"]


def test_quiet_blocks_and_show_false_log_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger=NAME)
    with quiet_progress():
        for _ in track(range(3), "in a quiet block", threshold=0, every=0):
            pass
    for _ in track(range(3), "not shown", show=False, threshold=0, every=0):
        pass
    assert records(caplog) == []
    debug = records(caplog, logging.DEBUG)
    assert [line.split(":")[0] for line in debug] == ["in a quiet block"] * 4 + ["not shown"] * 4
    assert debug[3].startswith("in a quiet block: done, 3 items") and debug[6].startswith("not shown: 3/3 items")


def test_a_failure_says_where_it_stopped(caplog):
    caplog.set_level(logging.INFO, logger=NAME)
    clock = Clock()
    with pytest.raises(RuntimeError):
        with Progress("reading", total=10, unit="files", clock=clock, threshold=1, every=100) as progress:
            clock.now += 3
            progress.update(4)
            raise RuntimeError("disk gone")
    assert records(caplog)[-1] == "reading: stopped after 4/10 files in 3.0 s, 1.33 files/s"


def test_durations_read_naturally():
    assert format_duration(0.42) == "0.4 s"
    assert format_duration(42) == "42 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(7620) == "2 h 07 min"


@pytest.fixture
def every_line(monkeypatch, caplog):
    """Every progress line of the sites, however short their work."""
    monkeypatch.setattr(progress_module, "THRESHOLD_S", 0.0)
    monkeypatch.setattr(progress_module, "EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger=NAME)
    return caplog
