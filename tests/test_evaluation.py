"""Evaluation on toy problems whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contrastlab.evaluation import alignment, knn_top1, linear_probe, uniformity


def clusters(n_per_class: int, classes: int, dim: int, spread: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=gen), dim=1) * 5
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    points = centres[labels] + spread * torch.randn(labels.shape[0], dim, generator=gen)
    return points, labels


def test_knn_separable_clusters_are_perfect():
    points, labels = clusters(70, 4, 16, 0.1, 0)
    train, test = points[::2], points[1::2]
    assert knn_top1(train, labels[::2], test, labels[1::2], k=10) == 1.0


def test_knn_matches_numpy_weighted_vote():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(30, 5, generator=gen), torch.randn(12, 5, generator=gen)
    y_train, y_test = torch.randint(0, 3, (30,), generator=gen), torch.randint(0, 3, (12,), generator=gen)
    a = train.numpy() / np.linalg.norm(train.numpy(), axis=1, keepdims=True)
    b = test.numpy() / np.linalg.norm(test.numpy(), axis=1, keepdims=True)
    correct = 0
    for i in range(12):
        sims = a @ b[i]
        top = np.argsort(-sims)[:7]
        votes = np.zeros(3)
        for j in top:
            votes[y_train[j]] += math.exp(sims[j] / 0.1)
        correct += int(votes.argmax() == y_test[i])
    assert knn_top1(train, y_train, test, y_test, k=7, temperature=0.1) == pytest.approx(correct / 12)


def test_knn_random_labels_near_chance():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(2000, 8, generator=gen), torch.randn(1000, 8, generator=gen)
    y_train = torch.randint(0, 10, (2000,), generator=gen)
    y_test = torch.randint(0, 10, (1000,), generator=gen)
    assert 0.05 < knn_top1(train, y_train, test, y_test) < 0.16


def test_linear_probe_learns_a_linear_rule():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 10, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).long()
    accuracy = linear_probe(x[:400], y[:400], x[400:], y[400:], epochs=30, lr=0.1)
    assert accuracy > 0.95


def test_alignment_and_uniformity_reference_values():
    z = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    assert alignment(z, z) == 0.0
    assert alignment(z, -z) == pytest.approx(4.0)
    pair = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(pair) == pytest.approx(-8.0)  # log exp(-2 * |2|^2)
