"""Each switch that reproduces a published setting runs through `contrastlab train` on CPU:
a tiny colour dataset, one epoch, no linear probe. Several switches share a run to keep
the count small; their numerics are tested in the method test files."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from contrastlab.cli import main
from tests.helpers import needs_fashion, tiny_config_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUNS: dict[str, tuple[dict, list[str]]] = {
    "moco_v2_published": ({"name": "moco", "queue_size": 64}, ["method.shuffle_bn=true", "method.shuffle_bn_groups=4"]),
    "moco_earlier": ({"name": "moco", "queue_size": 64}, ["method.shuffle_bn=false", "method.projector_bn=true"]),
    "slr_off_mm_per_batch": ({"name": "slr", "queue_size": 64}, ["method.slr=false", "method.mm_theta=per_batch"]),
    "mochi": (
        {"name": "mochi", "queue_size": 64},
        ["method.hard_negatives=16", "method.pair_negatives=8", "method.query_negatives=4"],
    ),
    "metaug_bank_delta_only": (
        {"name": "metaug", "generator_hidden": 16},
        [
            "method.negatives=memory_bank",
            "method.bank_negatives=32",
            "method.circle=delta_only",
            "method.margin_grad=detach",
        ],
    ),
    "metaug_lab_alexnet": (
        {"name": "metaug", "generator_hidden": 16},
        ["method.views=cmc_lab", "model.encoder=alexnet", "model.projector_layers=1", "method.margin_grad=keep"],
    ),
}


@pytest.mark.parametrize("case", list(RUNS))
def test_switch_trains_one_epoch_through_the_cli(case, tmp_path, capsys):
    method, overrides = RUNS[case]
    data = tiny_config_dict(
        method,
        data={"trifeature_train": 64, "trifeature_test": 32},
        optim={"epochs": 1, "batch_size": 16},
        eval={"linear_probe": False, "align_uniform": False, "knn_k": 10},
    )
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(data))
    sets = [arg for override in overrides for arg in ("--set", override)]
    assert main(["train", str(config_file), *sets, "--output", str(tmp_path / "run")]) == 0
    metrics = json.loads(capsys.readouterr().out.split("\nresults:")[0])
    assert math.isfinite(metrics["loss"])
    # The kNN monitor's name is being namespaced by split; either spelling is accepted.
    assert any(key in metrics for key in ("knn_top1", "val/knn_top1"))


@needs_fashion
def test_lab_views_on_grey_data_fail_with_one_line(tmp_path, capsys):
    data = tiny_config_dict(
        {"name": "metaug", "generator_hidden": 16, "views": "cmc_lab"},
        data={"name": "fashion_mnist", "subset": 64, "test_subset": 32},
        optim={"epochs": 1},
        eval={"linear_probe": False},
    )
    for key in ("trifeature_train", "trifeature_test", "image_size"):
        data["data"].pop(key)
    config_file = tmp_path / "grey.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["train", str(config_file), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "method.views" in error and "colour" in error
