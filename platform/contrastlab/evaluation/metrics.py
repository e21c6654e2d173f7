"""The standard SSL evaluation protocol, on frozen features extracted once."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from contrastlab.progress import Progress


@torch.no_grad()
def extract_features(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    device: torch.device,
    what: str = "extracting features",
    show_progress: bool = True,
) -> torch.Tensor:
    """Apply `fn` to `prepare(images[batch])` batch by batch; float32 features on `device`.

    Long extractions log progress lines headed `what` (see `contrastlab.progress`)."""
    outputs = []
    total = images.shape[0]
    with Progress(what, total, "images", rate_unit="img", show=show_progress) as progress:
        for start in range(0, total, batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            outputs.append(fn(prepare(batch)).float())
            progress.update(batch.shape[0])
    return torch.cat(outputs)


@torch.no_grad()
def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> float:
    """Weighted kNN (Wu et al. 2018): neighbours vote with weight exp(cos/T). Top-1 in [0, 1]."""
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    train_labels = train_labels.to(train.device)
    test_labels = test_labels.to(train.device)
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train.shape[0])
    correct = 0
    for start in range(0, test.shape[0], chunk):
        sims = test[start : start + chunk] @ train.T
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(sims.shape[0], classes, device=train.device)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        correct += (votes.argmax(1) == test_labels[start : start + chunk]).sum().item()
    return correct / test.shape[0]


class LinearProbe:
    """A linear classifier on frozen, standardised features (SGD, cosine lr), trained once and
    then scored on any number of held-out sets (val and test share one probe). Long training
    logs progress lines over the epochs, headed `what`."""

    def __init__(
        self,
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        classes: int,
        epochs: int = 100,
        lr: float = 0.1,
        batch_size: int = 512,
        weight_decay: float = 0.0,
        seed: int = 0,
        what: str = "linear probe",
        show_progress: bool = True,
    ):
        device = train_features.device
        self.mean = train_features.mean(0, keepdim=True)
        self.std = train_features.std(0, keepdim=True).clamp_min(1e-6)
        x_train = self._standardise(train_features)
        y_train = train_labels.to(device)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        head = torch.nn.Linear(x_train.shape[1], classes)
        with torch.no_grad():
            head.weight.normal_(0, 0.01, generator=generator)
            head.bias.zero_()
        self.head = head.to(device)
        optimizer = torch.optim.SGD(self.head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        steps_per_epoch = max(1, (x_train.shape[0] + batch_size - 1) // batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
        with Progress(what, epochs, "epochs", show=show_progress) as progress:
            for _ in range(epochs):
                order = torch.randperm(x_train.shape[0], generator=generator).to(device)
                for start in range(0, x_train.shape[0], batch_size):
                    idx = order[start : start + batch_size]
                    loss = F.cross_entropy(self.head(x_train[idx]), y_train[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                progress.update()

    def _standardise(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.std).float()

    @torch.no_grad()
    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 in [0, 1] on a held-out set."""
        predictions = self.head(self._standardise(features)).argmax(1)
        return (predictions == labels.to(predictions.device)).float().mean().item()


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 512,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> float:
    """Train a `LinearProbe` on one set and score it on another. Top-1 in [0, 1]."""
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = LinearProbe(train_features, train_labels, classes, epochs, lr, batch_size, weight_decay, seed)
    return probe.accuracy(test_features, test_labels)


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola (2020): E ||f(x) - f(x+)||^alpha over positive pairs (normalised z)."""
    return (z1 - z2).norm(dim=1).pow(alpha).mean().item()


def uniformity(z: torch.Tensor, t: float = 2.0, max_points: int = 4096) -> float:
    """Wang & Isola (2020): log E exp(-t ||f(x) - f(y)||^2) over distinct pairs."""
    z = z[:max_points].float()
    sq = torch.pdist(z, p=2).pow(2)
    return sq.mul(-t).exp().mean().log().item()
