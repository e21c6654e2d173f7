"""The study console without Ray: the table's rows and columns, in place on a terminal and as
plain lines elsewhere; the Tune callback fed by fake trials; where Ray's output goes."""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from contrastlab.progress import format_duration
from contrastlab.raytrain import ray_logs
from contrastlab.study.console import RunTable, TableWriter


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def split(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_table_rows_best_and_eta_follow_the_results():
    clock = Clock()
    table = RunTable(("trial",), "val/knn_top1", "max", total=3, clock=clock)
    table.add("a", ["a"], epochs=4)
    table.add("b", ["b"], epochs=4)
    table.start("a")
    clock.now += 10
    table.result("a", 1, 0.30)
    clock.now += 10
    table.result("a", 2, 0.25)  # worse than epoch 1: best stays 0.30
    lines = table.lines()
    assert split(lines[0]) == ["trial", "status", "epoch", "val/knn_top1", "best", "elapsed", "eta"]
    row_a = split(lines[1])
    # 2 epochs in 20 s, 2 left: 20 s at this pace
    assert row_a == ["a", "RUNNING", "2/4", "0.2500", "0.3000", format_duration(20), format_duration(20)]
    assert split(lines[2]) == ["b", "PENDING", "-", "-", "-", "-", "-"]
    # the footer: b and the row not created yet are pending; 2 + 4 + 4 epochs left at 10 s each, one at a time
    assert lines[3].startswith("runs: 1 running, 2 pending")
    assert f"eta ~{format_duration(100)}" in lines[3] and "best a 0.3000" in lines[3]
    table.finish("a", "DONE")
    assert split(table.lines()[1])[:3] == ["a", "DONE", "2/4"] and split(table.lines()[1])[-1] == "-"


def test_min_mode_keeps_the_lowest_value():
    table = RunTable(("trial",), "loss", "min", clock=Clock())
    table.add("x", ["x"], epochs=3)
    for epoch, value in enumerate([3.0, 2.0, 2.5], start=1):
        table.result("x", epoch, value)
    assert table.rows["x"].best == 2.0 and table.rows["x"].value == 2.5


def test_terminal_table_is_redrawn_in_place():
    clock = Clock()
    stream = TtyStream()
    writer = TableWriter(stream, clock=clock, live_every=1.0)
    assert writer.tty
    assert writer.table(["h", "r1", "f"])
    clock.now += 0.5
    assert not writer.table(["h", "r1*", "f"])  # not due yet
    clock.now += 1.0
    assert writer.table(["h", "r1**", "f"])
    out = stream.getvalue()
    first, second = out.split("\x1b[3F\x1b[J")  # cursor up over the 3 lines drawn, erase below
    assert first == "h\x1b[K\nr1\x1b[K\nf\x1b[K\n"
    assert second == "h\x1b[K\nr1**\x1b[K\nf\x1b[K\n"
    writer.line("[1/2] a: done")  # a line that stays: the table is erased first, drawn again later
    assert stream.getvalue().endswith("\x1b[3F\x1b[J[1/2] a: done\n")
    assert writer.drawn == 0


def test_plain_table_is_printed_periodically_and_only_when_a_row_changed():
    clock = Clock()
    stream = io.StringIO()
    writer = TableWriter(stream, clock=clock, plain_every=60.0)
    assert not writer.tty
    assert writer.table(["h", "a RUNNING 1/4"], signature=("a", 1))
    clock.now += 30
    assert not writer.table(["h", "a RUNNING 2/4"], signature=("a", 2))  # changed, not due
    clock.now += 40
    assert writer.table(["h", "a RUNNING 2/4"], signature=("a", 2))
    clock.now += 100
    assert not writer.table(["h", "a RUNNING 2/4"], signature=("a", 2))  # due, unchanged
    assert writer.table(["h", "a DONE 4/4"], signature=("a", 4), force=True)
    writer.line("summary")
    assert "\x1b" not in stream.getvalue()
    assert stream.getvalue().splitlines() == ["h", "a RUNNING 1/4", "h", "a RUNNING 2/4", "h", "a DONE 4/4", "summary"]


@pytest.fixture
def log_level():
    """Sets the `contrastlab` logger's level for one test (the CLI's -q gives WARNING)."""
    logger = logging.getLogger("contrastlab")
    previous = logger.level
    yield logger.setLevel
    logger.setLevel(previous)


def fake_trial(trial_id: str, epochs: int, last: dict | None = None):
    return SimpleNamespace(trial_id=trial_id, config={"params": {"optim.epochs": epochs}}, last_result=last or {})


def test_study_console_lines_for_done_pruned_and_failed_trials(monkeypatch, log_level):
    from contrastlab.tuning.callbacks import TrialConsole

    stream = io.StringIO()
    monkeypatch.setattr(ray_logs, "_console_streams", [stream])
    monkeypatch.delenv(ray_logs.VERBOSE_ENV, raising=False)
    log_level(logging.INFO)
    console = TrialConsole("s", Path("/out"), "val/knn_top1", "max", samples=3, base_epochs=4, max_t=4)
    monkeypatch.setattr(TrialConsole, "reason", lambda self, trial: "ValueError: bad lr")
    done, pruned, failed = fake_trial("t1", 4), fake_trial("t2", 4), fake_trial("t3", 2)
    console.setup()
    console.on_step_begin(0, [done, pruned, failed])
    for trial in (done, pruned, failed):
        console.on_trial_start(0, [], trial)
    for epoch, value in enumerate([0.2, 0.4, 0.3, 0.5], start=1):
        done.last_result = {"epoch": epoch, "val/knn_top1": value, "test/knn_top1": value - 0.1}
        console.on_trial_result(0, [], done, done.last_result)
    console.on_trial_result(0, [], pruned, {"epoch": 1, "val/knn_top1": 0.1})
    console.on_trial_result(0, [], failed, {"epoch": 1})
    console.on_trial_complete(0, [], done)
    console.on_trial_complete(0, [], pruned)
    console.on_trial_error(0, [], failed)
    console.on_experiment_end([done, pruned, failed])
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("study s: 3 trials into /out") and "tensorboard --logdir /out/tensorboard" in lines[0]
    events = [line for line in lines if line.startswith("[")]
    assert len(events) == 3
    assert re.match(
        r"\[1/3\] t1: done, epoch 4/4 in .*: val/knn_top1 0\.5000 \(best 0\.5000\), test/knn_top1 0\.4000$", events[0]
    )
    assert re.match(r"\[2/3\] t2: pruned, epoch 1/4 in .*: val/knn_top1 0\.1000", events[1])
    assert re.match(r"\[3/3\] t3: FAILED at epoch 1/2 after .*: ValueError: bad lr$", events[2])
    final = lines[-5:]  # the table as it is at the end: header, three rows, footer
    assert split(final[0])[0] == "trial"
    assert [split(line)[:3] for line in final[1:4]] == [
        ["t1", "DONE", "4/4"],
        ["t2", "PRUNED", "1/4"],
        ["t3", "FAILED", "1/2"],
    ]
    assert final[4].startswith("runs: 1 done, 1 pruned, 1 failed") and "best t1 0.5000" in final[4]


def test_quiet_console_shows_only_failures(monkeypatch, log_level):
    from contrastlab.study.console_callback import StudyConsole

    stream = io.StringIO()
    monkeypatch.setattr(ray_logs, "_console_streams", [stream])
    log_level(logging.WARNING)
    console = StudyConsole("start", "loss", "min", total=2)
    ok, bad = fake_trial("a", 1), fake_trial("b", 1)
    console.setup()
    console.on_step_begin(0, [ok, bad])
    console.on_trial_complete(0, [], ok)
    console.on_trial_error(0, [], bad)
    console.on_experiment_end([ok, bad])
    assert stream.getvalue().splitlines() == ["[2/2] b: FAILED at epoch 0 after 0.0 s: the trial failed"]


def test_ablation_console_plans_variant_and_seed_rows():
    from contrastlab.ablation.console import RunConsole
    from contrastlab.ablation.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "ablations" / "quickstart.yaml")
    runs = {
        f"{v.name}/seed{s}": {"variant": v.name, "seed": s, "epochs": spec.full.optim.epochs}
        for v in spec.variants[1:]
        for s in spec.seeds
    }
    console = RunConsole(spec, runs, Path("/out"))
    table, _ = console.open()
    # the quick start's runs report kNN every epoch; its linear probe only at the end
    assert table.metric == "val/knn_top1"
    assert console.shown == ("val/linear_top1", "test/linear_top1", "val/knn_top1", "test/knn_top1")
    rows = [split(line) for line in table.lines()[1:-1]]
    expected = [[v.name, f"seed{s}", "PENDING"] for v in spec.variants[1:] for s in spec.seeds]
    assert [row[:3] for row in rows] == expected
    assert f"{len(runs)} runs to compute, {len(spec.seeds)} already done" in console.start_line


# -- where Ray's output goes -------------------------------------------------------------------
HARMLESS_LINE = (
    "[2026-11-26 17:01:28,639 E 6308 6366] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' "
    "and ID: 'c34f' has constructor arguments in the object store and max_restarts > 0. If the arguments ..."
)
REAL_ERROR = "[2026-11-26 17:01:29,000 E 6308 6366] core_worker.cc:99: the object store is full"


def test_error_lines_are_shown_unless_known_harmless():
    assert ray_logs.harmless(HARMLESS_LINE) and not ray_logs.shown_on_console(HARMLESS_LINE)
    assert ray_logs.shown_on_console(REAL_ERROR)
    assert ray_logs.shown_on_console("2026-11-26 17:01:29,000\tERROR worker.py:12 -- something broke")
    assert not ray_logs.shown_on_console("Checkpoint successfully created at: Checkpoint(...)")


def test_worker_logs_are_copied_with_the_actor_name_and_other_jobs_left_out(tmp_path):
    logs = tmp_path / "session" / "logs"
    logs.mkdir(parents=True)
    ours = logs / "worker-aa-01000000-41.err"
    ours.write_text(":job_id:01000000\n:actor_name:TrainController\nRequesting resources\n" + HARMLESS_LINE + "\n")
    (logs / "worker-bb-02000000-42.out").write_text(":job_id:02000000\n:actor_name:Other\nnot ours\n")
    sink = ray_logs.LogSink(tmp_path / "out" / "ray.log")
    echo = io.StringIO()
    follower = ray_logs.WorkerLogFollower(logs, sink, "01000000", echo)
    follower.sweep()
    with ours.open("a") as handle:
        handle.write(REAL_ERROR + "\nhalf a li")  # an unfinished line waits for its end
    follower.sweep()
    sink.close()
    text = (tmp_path / "out" / "ray.log").read_text().splitlines()
    assert text == [
        "(TrainController pid=41) Requesting resources",
        f"(TrainController pid=41) {HARMLESS_LINE}",
        f"(TrainController pid=41) {REAL_ERROR}",
    ]
    assert echo.getvalue().splitlines() == [f"(TrainController pid=41) {REAL_ERROR}"]


def test_ray_output_routes_stdout_and_ray_records_to_the_file_and_restores_them(tmp_path):
    before = sys.stdout
    ray_logger = logging.getLogger("ray")
    handlers = list(ray_logger.handlers)
    (tmp_path / "study.db").touch()  # the output folder holds the study
    output = ray_logs.RayOutput(tmp_path / "logs").start()
    try:
        assert ray_logs.console_stream() is before
        print("Configuration for experiment")
        ray_logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled")
    finally:
        output.stop()
    assert sys.stdout is before and ray_logger.handlers == handlers
    assert ray_logs.console_stream() is sys.stdout
    text = (tmp_path / "logs" / ray_logs.LOG_FILE).read_text()
    assert "Configuration for experiment" in text and "Token authentication is enabled" in text
    record = logging.LogRecord(
        "ray", logging.WARNING, "x", 1, "Token authentication is enabled for this Ray cluster.", None, None
    )
    assert not ray_logs.ConsoleRayFilter().filter(record)
    record.msg = "a trial could not be scheduled"
    assert ray_logs.ConsoleRayFilter().filter(record)
    record.levelno = logging.INFO
    assert not ray_logs.ConsoleRayFilter().filter(record)
    failed = logging.LogRecord("ray.tune", logging.ERROR, "x", 1, "Trial task failed for trial t1", None, None)
    assert not ray_logs.ConsoleRayFilter().filter(failed)  # the console's FAILED line says it


@pytest.mark.parametrize("flag", [False, True])
def test_verbose_flag_leaves_ray_output_as_ray_prints_it(tmp_path, monkeypatch, flag):
    import ray

    from contrastlab.cli import build_parser
    from contrastlab.raytrain import session as session_module

    monkeypatch.delenv(ray_logs.VERBOSE_ENV, raising=False)
    argv = ["--verbose"] if flag else []
    assert build_parser().parse_args([*argv, "data", "list"]).verbose is flag
    if flag:
        monkeypatch.setenv(ray_logs.VERBOSE_ENV, "1")
    seen = []

    def fake_init(address, num_cpus=None, *, output=None, **kw):
        seen.append((output, sys.stdout))
        return True

    monkeypatch.setattr(session_module, "init_ray", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    before = sys.stdout
    with session_module.RaySession(log_dir=tmp_path / "logs") as session:
        session.ensure()
    ((output, stdout_during),) = seen
    assert (output is None) is flag
    assert (stdout_during is before) is flag  # by default Tune's prints go to the file
    assert sys.stdout is before


def test_plain_tables_between_the_first_and_the_last_show_only_rows_that_changed(monkeypatch, log_level):
    from contrastlab.study.console_callback import StudyConsole

    stream = io.StringIO()
    monkeypatch.setattr(ray_logs, "_console_streams", [stream])
    monkeypatch.delenv(ray_logs.VERBOSE_ENV, raising=False)
    log_level(logging.INFO)
    console = StudyConsole("start", "loss", "min", total=3)
    _, writer = console.open()
    writer.plain_every = 0.0  # every change is due
    trials = [fake_trial(name, 2) for name in ("a", "b", "c")]
    console.on_step_begin(0, trials)  # the first rows: the whole table
    console.on_trial_start(0, [], trials[1])
    console.on_trial_result(0, [], trials[1], {"epoch": 1, "loss": 2.5})  # only b changed
    console.on_step_begin(0, trials)  # nothing changed: nothing printed
    console.on_experiment_end(trials)  # the end: the whole table again
    blocks, block = [], []
    for line in stream.getvalue().splitlines():
        block.append(line)
        if line.startswith("runs: "):
            blocks.append([split(row)[:2] for row in block[1:-1]])
            block = []
    assert blocks == [
        [["a", "PENDING"], ["b", "PENDING"], ["c", "PENDING"]],
        [["b", "RUNNING"]],
        [["a", "PENDING"], ["b", "RUNNING"], ["c", "PENDING"]],
    ]


def test_ray_log_waits_for_the_output_folder_and_is_never_its_creator(tmp_path):
    refused = ray_logs.LogSink(tmp_path / "refused" / "logs" / "ray.log", root=tmp_path / "refused")
    refused.write_lines(["Started a local Ray instance."])
    refused.close()
    assert not (tmp_path / "refused").exists()  # a command refused before its output: nothing left
    sink = ray_logs.LogSink(tmp_path / "out" / "logs" / "ray.log", root=tmp_path / "out")
    sink.write_lines(["first"])
    (tmp_path / "out").mkdir()  # the command claims its folder: its lock only
    (tmp_path / "out" / ".lock").touch()
    sink.write_lines(["second"])
    assert not (tmp_path / "out" / "logs").exists()
    (tmp_path / "out" / "study.db").touch()  # the study's first file
    sink.write_lines(["third"])
    sink.close()
    assert (tmp_path / "out" / "logs" / "ray.log").read_text().splitlines() == ["first", "second", "third"]
