"""Per-sample two-view augmentation: shapes, ranges, randomness, seeding, torchvision semantics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from contrastlab.config import AugmentConfig
from contrastlab.data import TwoViewAugment
from contrastlab.data import augment as aug_module
from tests.reference import reference_jitter

MEAN, STD = 0.5, 0.25
NO_CROP = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "hflip_prob": 0.0}
NOTHING = {**NO_CROP, "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0}


def augment(channels: int = 3, size: int = 16, **overrides) -> TwoViewAugment:
    return TwoViewAugment(AugmentConfig(**overrides), channels, size, (MEAN,) * channels, (STD,) * channels)


def images(n: int = 8, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    shape = (n, channels, size, size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def raw(views: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to the 0-1 pixel scale."""
    return views * STD + MEAN


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_dtype_and_range(channels):
    aug = augment(channels, size=12, blur_prob=0.5)
    first, second = aug.two_views(images(16, channels, size=20), gen(0))
    for view in (first, second):
        assert view.shape == (16, channels, 12, 12) and view.dtype == torch.float32
        assert raw(view).min() >= -1e-5 and raw(view).max() <= 1 + 1e-5
    assert not torch.equal(first, second)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_sample_gets_its_own_parameters(channels):
    batch = images(1, channels, size=20).repeat(32, 1, 1, 1)
    out = augment(channels)(batch, gen(0))
    assert len({tuple(v.flatten().tolist()) for v in out}) == 32


def test_flip_varies_per_sample_and_mirrors():
    ramp = (torch.arange(16, dtype=torch.uint8) * 15).view(1, 1, 1, 16).expand(64, 1, 16, 16).contiguous()
    aug = augment(1, **{**NOTHING, "hflip_prob": 0.5})
    out = aug(ramp, gen(1))
    flipped = out[:, 0, 0, -1] < out[:, 0, 0, 0]
    assert 15 < flipped.sum() < 49
    plain = aug.normalize(ramp)
    torch.testing.assert_close(out[flipped], plain[flipped].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[~flipped], plain[~flipped], atol=1e-5, rtol=0)


def test_seed_reproducibility():
    batch = images()
    aug = augment(blur_prob=0.5)
    a, b = aug.two_views(batch, gen(5)), aug.two_views(batch, gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = aug.two_views(batch, gen(6))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_when_nothing_is_random(channels):
    batch = images(channels=channels)
    identity = augment(channels, **NOTHING)
    out = identity(batch, gen(0))
    torch.testing.assert_close(out, identity.normalize(batch), atol=1e-5, rtol=0)
    torch.testing.assert_close(raw(out), batch.float() / 255, atol=1e-5, rtol=0)


def test_normalize_is_deterministic_and_resizes():
    batch = images(4, size=20)
    aug = augment(size=16)
    first = aug.normalize(batch)
    assert first.shape == (4, 3, 16, 16) and torch.equal(first, aug.normalize(batch))
    torch.testing.assert_close(aug.normalize(images(4)), (images(4).float() / 255 - MEAN) / STD)


def test_crop_grid_matches_affine_grid():
    aug = augment(size=8)
    u = torch.rand(5, aug_module._DRAWS, generator=gen(0))
    grid = aug._crop_grid(u)
    cfg = aug.cfg
    area = cfg.crop_scale[0] + (cfg.crop_scale[1] - cfg.crop_scale[0]) * u[:, 0]
    log_ratio = math.log(cfg.crop_ratio[0]) + (math.log(cfg.crop_ratio[1]) - math.log(cfg.crop_ratio[0])) * u[:, 1]
    width = (area * log_ratio.exp()).sqrt().clamp(max=1)
    height = (area / log_ratio.exp()).sqrt().clamp(max=1)
    flip = torch.where(u[:, 4] < cfg.hflip_prob, -1.0, 1.0)
    theta = torch.zeros(5, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, (2 * u[:, 2] - 1) * (1 - width)
    theta[:, 1, 1], theta[:, 1, 2] = height, (2 * u[:, 3] - 1) * (1 - height)
    torch.testing.assert_close(grid, F.affine_grid(theta, [5, 3, 8, 8], align_corners=False))
    assert grid.abs().max() <= 1 + 1e-6  # crops stay inside the image


def test_crops_respect_the_scale_range():
    # A white square on black: the crop's area fraction shows as the square's size in the view.
    batch = torch.zeros(64, 1, 32, 32, dtype=torch.uint8)
    batch[:, :, 12:20, 12:20] = 255
    aug = augment(1, size=32, **{**NOTHING, "crop_scale": (0.25, 0.25), "crop_ratio": (1.0, 1.0)})
    bright = (raw(aug(batch, gen(0))) > 0.5).float().sum((1, 2, 3))
    # The square covers 1/16 of the image; in a crop of 1/4 of the area it fills up to 1/4.
    assert bright.max() <= 0.25 * 32 * 32 + 40 and bright.max() > 0.25 * 32 * 32 - 40


def test_jitter_matches_torchvision_in_a_random_order_per_sample():
    """Brightness, contrast and saturation with torchvision's clamps, ops in each sample's own
    order: extreme factors make the order matter, so a fixed order would not match."""
    cfg = AugmentConfig(
        **NO_CROP, jitter_prob=0.7, brightness=0.9, contrast=0.9, saturation=0.9, hue=0.0, grayscale_prob=0.0
    )
    batch = images(64, size=8)
    out = TwoViewAugment(cfg, 3, 8, (MEAN,) * 3, (STD,) * 3)(batch, gen(3))
    u = torch.rand(64, aug_module._DRAWS, generator=gen(3))
    expected = reference_jitter(batch, u, cfg)
    # torchvision's luma weights are 0.2989 (red) where ours are 0.299: a tiny difference.
    torch.testing.assert_close(raw(out), expected, atol=2e-3, rtol=0)
    orders = {tuple(u[i, aug_module._ORDER][:3].argsort().tolist()) for i in range(64)}
    assert len(orders) == 6  # all six orders occur in the batch


def test_hue_keeps_luma_and_greys():
    batch = images(16, size=8)
    batch[:, :, :2] = 90  # a grey band: hue cannot change it
    aug = augment(
        size=8, **NO_CROP, jitter_prob=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.4, grayscale_prob=0.0
    )
    out, before = raw(aug(batch, gen(0))), batch.float() / 255
    luma = torch.tensor(aug_module.GRAY_WEIGHTS).view(1, 3, 1, 1)
    unclipped = ((out > 1e-4) & (out < 1 - 1e-4)).all(1, keepdim=True)
    luma_change = ((out - before) * luma).sum(1, keepdim=True).abs()
    assert luma_change[unclipped].max() < 1e-4
    torch.testing.assert_close(out[:, :, :2], before[:, :, :2], atol=1e-5, rtol=0)
    assert (out - before).abs().amax((1, 2, 3)).min() > 0.01  # every image's colours moved


def test_hue_direction_matches_hsv():
    # A small positive hue shift moves pure red towards yellow (green up), as in HSV.
    const = augment()._on(torch.device("cpu"))
    matrix = aug_module._hue_rotation(torch.tensor([0.2]), const["rgb_to_yiq"], const["yiq_to_rgb"])[0]
    shifted = matrix @ torch.tensor([1.0, 0.0, 0.0])
    reference = TF.adjust_hue(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1), 0.2 / (2 * math.pi)).flatten()
    assert shifted[1] > 0.05 and reference[1] > 0.05


def test_grayscale_probability():
    aug = augment(**NO_CROP, jitter_prob=0.0, grayscale_prob=0.5)
    out = raw(aug(images(64), gen(0)))
    grey = (out[:, 0] - out[:, 1]).abs().amax((1, 2)) < 1e-5
    assert 15 < grey.sum() < 49
    torch.testing.assert_close(out[grey, 0], out[grey, 2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_blur_per_sample(channels):
    batch = images(64, channels)
    plain = augment(channels, **NOTHING)(batch, gen(2))
    blurred = augment(channels, **{**NOTHING, "blur_prob": 0.5, "blur_sigma": (1.0, 2.0)})(batch, gen(2))
    same = (plain == blurred).flatten(1).all(1)
    assert 15 < same.sum() < 49  # half the samples skip the blur and come out unchanged
    smooth = blurred.diff(dim=-1).abs().mean((1, 2, 3)) < plain.diff(dim=-1).abs().mean((1, 2, 3))
    assert torch.equal(smooth, ~same)  # the others are smoother
    flat = torch.full((4, channels, 16, 16), 77, dtype=torch.uint8)
    always = augment(channels, **{**NOTHING, "blur_prob": 1.0})
    torch.testing.assert_close(always(flat, gen(0)), always.normalize(flat), atol=1e-5, rtol=0)


def test_one_channel_skips_colour_ops():
    aug = augment(1)
    assert aug.jitter_ops == ["brightness", "contrast"] and not aug.use_gray
    out = aug(images(8, 1), gen(0))
    assert out.shape == (8, 1, 16, 16) and torch.isfinite(out).all()


def test_bf16_autocast_and_channels_last():
    batch = images(8)
    aug = augment()
    expected = aug(batch, gen(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = aug(batch, gen(4))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    last = aug(batch.contiguous(memory_format=torch.channels_last), gen(4))
    assert last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(last, expected)


def test_rejects_wrong_channels():
    with pytest.raises(ValueError, match="3-channel images"):
        augment(3)(images(2, 1), gen(0))
    with pytest.raises(ValueError, match="mean/std"):
        TwoViewAugment(AugmentConfig(), 3, 16, (0.5,), (0.25,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_cuda_matches_shapes_and_seeding():
    batch = images(32).cuda()
    aug = augment(blur_prob=0.5)
    a = aug.two_views(batch, torch.Generator(device="cuda").manual_seed(0))
    b = aug.two_views(batch, torch.Generator(device="cuda").manual_seed(0))
    assert a[0].is_cuda and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert raw(a[0]).min() >= -1e-5 and raw(a[0]).max() <= 1 + 1e-5
