"""MetAug's released settings as switches: CMC Lab views, the memory bank, the AlexNet encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.config import ConfigError
from contrastlab.distributed import LocalDistributed
from contrastlab.methods import DataInfo, StepTools, TrainBatch, get_method_class
from contrastlab.methods.metaug_views import LAB_MEAN, LAB_STD, lab_views, rgb_to_lab
from contrastlab.models import build_encoder
from tests.helpers import tiny_config
from tests.reference import lab_of_pixel, np_oucl, score_rows

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
INFO = DataInfo(channels=3, image_size=16, num_train=40, mean=MEAN, std=STD)
ROWS = 8


def build(method: dict, info: DataInfo = INFO, **sections):
    cfg = tiny_config({"name": "metaug", "generator_hidden": 16, **method}, **sections)
    torch.manual_seed(0)
    return get_method_class("metaug")(cfg, info, LocalDistributed("cpu"))


def views_batch(seed: int = 1) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    views = tuple(torch.randn(ROWS, 3, 16, 16, generator=gen) for _ in range(2))
    indices = torch.randperm(INFO.num_train, generator=gen)[:ROWS]
    return TrainBatch(views, indices, 0, 0, torch.Generator().manual_seed(seed + 1))


# -- Lab conversion ----------------------------------------------------------------------------------


def test_rgb_to_lab_known_colours_and_per_pixel_reference():
    colours = torch.tensor(
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    lab = rgb_to_lab(colours.view(5, 3, 1, 1)).view(5, 3)
    known = [(100.0, 0.0, 0.0), (0.0, 0.0, 0.0), (53.24, 80.09, 67.20), (87.73, -86.18, 83.18), (32.30, 79.19, -107.86)]
    np.testing.assert_allclose(lab.numpy(), np.array(known), atol=0.02)
    pixels = torch.rand(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pixels[:4] = 0.01  # the linear branches near black
    got = rgb_to_lab(pixels.view(64, 3, 1, 1)).view(64, 3).numpy()
    expected = np.array([lab_of_pixel(*row) for row in pixels.tolist()])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-3)


def test_lab_views_undo_the_data_normalisation_and_scale_like_cmc():
    rgb = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    normalised = (rgb - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        STD, dtype=torch.float64
    ).view(1, 3, 1, 1)
    lightness, colour = lab_views(normalised, MEAN, STD)
    lab = rgb_to_lab(rgb)
    centre, scale = torch.tensor(LAB_MEAN).view(1, 3, 1, 1), torch.tensor(LAB_STD).view(1, 3, 1, 1)
    expected = (lab - centre.double()) / scale.double()
    torch.testing.assert_close(lightness, expected[:, :1])
    torch.testing.assert_close(colour, expected[:, 1:])


# -- cmc_lab views ---------------------------------------------------------------------------------------


def test_cmc_lab_views_one_encoder_per_channel_group_and_the_oucl_reference():
    method = build({"views": "cmc_lab", "generator": False, "gamma": 8.0})
    assert method.encoder.net[0].in_channels == 1 and method.encoder_ab.net[0].in_channels == 2
    batch = views_batch()
    loss = method(batch).loss
    with torch.no_grad():
        lightness, colour = lab_views(batch.views[0], MEAN, STD)
        z1 = F.normalize(method.projector(method.encoder(lightness)), dim=1).double().numpy()
        z2 = F.normalize(method.projector_ab(method.encoder_ab(colour)), dim=1).double().numpy()
    assert loss.item() == pytest.approx(np_oucl(*score_rows(z1, z2, "sample"), 8.0, scaled=True), rel=1e-5)
    method.eval()
    assert method.features(batch.views[0]).shape == (ROWS, 2 * method.feature_dim)


def test_cmc_lab_on_grey_data_is_a_one_line_config_error():
    grey = DataInfo(channels=1, image_size=16, num_train=40)
    with pytest.raises(ConfigError, match=r"method\.views: two_crops for this data") as caught:
        build({"views": "cmc_lab"}, grey)
    assert "\n" not in str(caught.value)


def test_meta_step_trains_both_lab_encoders_and_leaves_them_to_the_encoder_step():
    method = build(
        {"views": "cmc_lab", "negatives": "memory_bank", "bank_negatives": 6, "aug_weight": 1.0, "margin_weight": 0.1}
    )
    tools = StepTools([torch.optim.SGD(group, lr=0.1) for group in method.optimizer_groups()])
    ab_before = [p.detach().clone() for p in method.encoder_ab.parameters()]
    scalars = method.train_step(method, views_batch(), tools)
    assert torch.isfinite(scalars["meta_grad_norm"]) and scalars["meta_grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(ab_before, method.encoder_ab.parameters()))


# -- memory bank -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["oucl", "infonce"])
def test_memory_bank_loss_matches_the_reference(loss):
    method = build(
        {
            "negatives": "memory_bank",
            "bank_negatives": 5,
            "generator": False,
            "gamma": 8.0,
            "loss": loss,
            "temperature": 0.3,
        }
    )
    banks = method.bank.banks.double().numpy()
    batch = views_batch()
    out = method(batch)
    draw = method._step_draw
    own, negatives = draw.own.numpy(), draw.negatives.numpy()
    assert negatives.shape == (ROWS, 5) and negatives.max() < INFO.num_train
    with torch.no_grad():
        z1, z2 = (z.double().numpy() for z in method.project(batch.views))
    # View 1 against bank 2 and view 2 against bank 1: raw dot products, one row per sample.
    pos = [np.array([z1[i] @ banks[1, own[i]], z2[i] @ banks[0, own[i]]]) for i in range(ROWS)]
    neg = [np.concatenate([banks[1, negatives[i]] @ z1[i], banks[0, negatives[i]] @ z2[i]]) for i in range(ROWS)]
    if loss == "oucl":
        expected = np_oucl([(p + 1) / 2 for p in pos], [(n + 1) / 2 for n in neg], 8.0, scaled=True)
    else:
        terms = []
        for i in range(ROWS):
            for view in range(2):
                logits = np.concatenate([[pos[i][view]], neg[i][5 * view : 5 * (view + 1)]]) / 0.3
                terms.append(np.log(np.exp(logits).sum()) - logits[0])
        expected = float(np.mean(terms))
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_bank_is_updated_once_per_iteration_with_the_encoder_step_features():
    method = build({"negatives": "memory_bank", "bank_negatives": 4, "bank_momentum": 0.5})
    batch = views_batch()
    before = method.bank.banks.clone()
    features: list[tuple[torch.Tensor, torch.Tensor]] = []
    project = method.project

    def record(views, params=None):
        z = project(views, params)
        if params is None and torch.is_grad_enabled():
            features.append(tuple(t.detach().clone() for t in z))
        return z

    method.project = record
    tools = StepTools([torch.optim.SGD(group, lr=0.1) for group in method.optimizer_groups()])
    method.train_step(method, batch, tools)
    z1, z2 = features[0]
    rows = batch.indices
    for view, z in enumerate((z1, z2)):
        expected = F.normalize(0.5 * before[view, rows] + 0.5 * z, dim=1)
        torch.testing.assert_close(method.bank.banks[view, rows], expected)
    untouched = torch.ones(INFO.num_train, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(method.bank.banks[:, untouched], before[:, untouched])


# -- AlexNet ---------------------------------------------------------------------------------------------
def test_alexnet_is_the_half_width_cmc_net():
    cfg = tiny_config({"name": "metaug"}, model={"encoder": "alexnet"})
    net, dim = build_encoder(cfg.model, 3)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [48, 128, 192, 192, 128]
    assert [lin.out_features for lin in linears] == [2048, 2048] and dim == 2048
    batch_norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(batch_norms) == len(convs) + len(linears)
    for size in (16, 32):
        assert net(torch.randn(2, 3, size, size)).shape == (2, 2048)
