"""Progress lines: the throttle, the quiet threshold, and every site that does long work."""

from __future__ import annotations

import logging

import pytest
import torch

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
    progress = Progress("ending", total=2, clock=clock, threshold=0, every=0)
    progress.update(2)  # all done: no "2/2" line, the final line says it
    assert records(caplog)[-1] == final
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
    assert [line.split(":")[0] for line in debug] == ["in a quiet block"] * 3 + ["not shown"] * 3
    assert debug[2].startswith("in a quiet block: done, 3 items") and debug[4].startswith("not shown: 2/3 items")


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


def messages(caplog) -> str:
    return "\n".join(records(caplog))


def test_trifeature_generation_and_loading_show_progress(every_line, tmp_path):
    from contrastlab.config import DataConfig
    from contrastlab.data import load_dataset

    cfg = DataConfig(name="trifeature", trifeature_train=30, trifeature_test=12, image_size=16, cache_dir=str(tmp_path))
    load_dataset(cfg)
    text = messages(every_line)
    assert "generating Trifeature (train): done, 30 images in" in text
    assert "generating Trifeature (test): done, 12 images in" in text
    assert "loading trifeature: done in" in text
    every_line.clear()
    load_dataset(cfg)  # from the cache: nothing generated
    assert "generating" not in messages(every_line) and "loading trifeature: done in" in messages(every_line)


def test_data_prepare_shows_progress(every_line, tmp_path):
    from contrastlab.config import DataConfig
    from contrastlab.data import prepare_dataset

    prepare_dataset(DataConfig(name="trifeature", trifeature_train=20, trifeature_test=10, cache_dir=str(tmp_path)))
    text = messages(every_line)
    assert "generating Trifeature (train): done, 20 images" in text and "preparing trifeature: done in" in text


def test_image_decoding_and_resizing_show_progress(every_line, tmp_path):
    from PIL import Image

    from contrastlab.config import DataConfig
    from contrastlab.data import load_dataset
    from contrastlab.data.datasets import resize

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (12, 12), (40 * i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    load_dataset(DataConfig(name="image_folder", root=str(tmp_path), image_size=8, val_size=2))
    assert f"decoding images in {tmp_path}: 9/10 images" in messages(every_line)
    resized = resize(torch.zeros(7, 1, 12, 12, dtype=torch.uint8), 6, chunk=3, what="resizing test images")
    assert resized.shape == (7, 1, 6, 6)
    lines = [line for line in records(every_line) if line.startswith("resizing test images")]
    assert [line.split(",")[0] for line in lines] == [
        "resizing test images: 3/7 images",
        "resizing test images: 6/7 images",
        "resizing test images: done",
    ]


def test_feature_extraction_and_linear_probe_show_progress(every_line, tmp_path):
    from contrastlab.engine.build import build_run
    from tests.helpers import tiny_config

    run = build_run(tiny_config(data={"cache_dir": str(tmp_path), "val_size": 32}, eval={"probe_epochs": 3}))
    every_line.clear()
    run.evaluator.final(run.method)
    text = messages(every_line)
    for split, count in (("train", 224), ("val", 32), ("test", 128)):
        assert f"extracting features ({split}): done, {count} images in" in text
    assert "linear probe (shape): 2/3 epochs" in text
    for attribute in ("colour", "texture"):
        assert f"linear probe ({attribute}): done, 3 epochs in" in text


def test_a_second_worker_logs_progress_at_debug_only(every_line):
    from contrastlab.evaluation import extract_features

    images = torch.zeros(10, 1, 4, 4)
    extract_features(lambda x: x.flatten(1), images, lambda x: x, 4, torch.device("cpu"), "extracting features (x)")
    assert "extracting features (x): 4/10 images" in messages(every_line)
    every_line.clear()
    extract_features(lambda x: x.flatten(1), images, lambda x: x, 4, torch.device("cpu"), "features", False)
    assert records(every_line) == []


def test_mcl_kmeans_between_stages_shows_progress(every_line, tmp_path):
    from contrastlab.engine.build import build_run
    from tests.helpers import tiny_config

    method = {"name": "mcl", "stages": 1, "clusters": 4, "stage_epochs": [1, 1], "kmeans_restarts": 2}
    run = build_run(tiny_config(method, data={"cache_dir": str(tmp_path)}, eval={"linear_probe": False}))
    run.method.on_epoch_start(0, run.ctx)
    every_line.clear()
    run.method.on_epoch_start(1, run.ctx)  # stage 1 starts: stage 0 embeds the training set, k-means clusters it
    text = messages(every_line)
    train = run.train_images.shape[0]
    assert f"extracting features (train): done, {train} images in" in text
    assert f"MCL k-means of stage 0: {train} points into 4 clusters: 1/2 restarts" in text
    assert f"MCL k-means of stage 0: {train} points into 4 clusters: done, 2 restarts in" in text


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_restarts_one_at_a_time_match_scikit_learn(seed):
    from sklearn.cluster import KMeans

    from contrastlab.methods.mcl_sampling import kmeans_assign

    gen = torch.Generator().manual_seed(seed)
    points = torch.randn(200, 6, generator=gen)  # no clear clusters: the restarts disagree
    expected = KMeans(n_clusters=5, n_init=4, random_state=seed).fit_predict(
        torch.nn.functional.normalize(points, dim=1).numpy()
    )
    assert kmeans_assign(points, 5, seed, n_init=4).tolist() == expected.tolist()


@pytest.mark.parametrize("flags, level", [(["--debug"], logging.DEBUG), ([], logging.NOTSET)])
def test_debug_flag_shows_the_debug_lines(flags, level, capsys):
    from contrastlab.cli import main

    logger = logging.getLogger("contrastlab")
    before = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        assert main([*flags, "data", "list"]) == 0
        assert logger.level == level
    finally:
        logger.setLevel(before)


def test_building_an_ablation_report_shows_progress(every_line, tmp_path):
    from contrastlab.ablation.report import write_report

    results = [
        {
            "variant": variant,
            "seed": seed,
            "reused": False,
            "overrides": {},
            "curves": {"loss": [(1, 2.0), (2, 1.5)]},
            "metrics": {"test/linear_top1": 0.7 + shift + 0.01 * seed, "val/linear_top1": 0.71 + shift},
        }
        for variant, shift in (("full", 0.0), ("no_a", -0.05))
        for seed in (0, 1)
    ]
    write_report(
        results,
        tmp_path / "report",
        reference="full",
        metrics=["linear_top1"],
        title="t",
        mode_note="fixed",
        design="leave_one_out",
        component_of={"no_a": "a"},
        n_boot=200,
    )
    text = messages(every_line)
    assert "building report: statistics: done in" in text
    assert "building report: figures: done, 1 metrics in" in text
