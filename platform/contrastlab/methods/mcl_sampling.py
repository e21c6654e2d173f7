"""MCL's pseudo-labels and feature-aware negatives (Zhang et al., arXiv 2402.11816).

- `kmeans_assign`: k-means on the L2-normalised backbone features of one finished stage.
- `cumulative_labels` / `stage_pseudo_labels`: the pseudo-label of a sample is its cell
  across the clusterings of all earlier stages (y = Σ_s c_s·K^s, re-indexed to consecutive
  ids in increasing order of y), or only the last clustering.
- `ClusterBatches`: index batches that each come from one pseudo-label group, so every
  in-batch negative shares the anchor's group.
- `batch_negative_mask` / `queue_negative_mask`: which negatives share the anchor's group,
  for masking the NT-Xent negatives (`nt_xent`) or a MoCo queue (`moco_loss`), both
  through their `negative_mask` argument.

Small groups (the choice the paper leaves open): per epoch, each group is shuffled and cut
into full batches; what is left of every group (fewer than a batch) goes into a pool,
ordered group by group, and the pool is cut into *mixed* batches. A mixed batch therefore
holds a few whole group remainders next to each other. Nothing is dropped except the last
N mod B samples of the pool, exactly as many as the random baseline drops with
`drop_last`, and which samples those are changes every epoch. The method can mask the
other groups' negatives inside mixed batches (`small_groups: merge_masked`), so every
anchor still contrasts only with its own group.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from contrastlab.data.sampling import epoch_seed
from contrastlab.losses import negative_candidate_index
from contrastlab.progress import Progress


# -- clustering and pseudo-labels ---------------------------------------------------------
def kmeans_assign(
    features: torch.Tensor, clusters: int, seed: int, n_init: int = 3, what: str = "k-means"
) -> torch.Tensor:
    """k-means (scikit-learn, k-means++ init) on L2-normalised rows; [N] cluster ids on CPU.

    The `n_init` restarts run one at a time, so long clusterings log progress lines (headed
    `what`) between them. They draw from one random stream and keep the best inertia the way
    `KMeans(n_init=n_init, random_state=seed)` does, which gives the same clustering.
    """
    from sklearn.cluster import KMeans

    if features.shape[0] < clusters:
        raise ValueError(f"k-means with {clusters} clusters needs at least as many samples (got {features.shape[0]})")
    points = F.normalize(features.detach().float(), dim=1).cpu().numpy()
    stream = np.random.RandomState(seed)
    best_labels, best_inertia = None, None
    with Progress(f"{what}: {points.shape[0]} points into {clusters} clusters", n_init, "restarts") as progress:
        for _ in range(n_init):
            model = KMeans(n_clusters=clusters, n_init=1, random_state=stream).fit(points)
            # A lower inertia wins unless it is the same partition (rounding), as in scikit-learn.
            if best_inertia is None or (
                model.inertia_ < best_inertia and not same_partition(model.labels_, best_labels)
            ):
                best_labels, best_inertia = model.labels_, model.inertia_
            progress.update()
    return torch.from_numpy(best_labels.astype(np.int64))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings group the samples alike (up to renaming the labels)."""
    pairs = np.unique(np.stack([a, b]), axis=1).shape[1]
    return pairs == np.unique(a).size == np.unique(b).size


def consecutive_ids(codes: torch.Tensor) -> torch.Tensor:
    """Re-index codes to 0..G-1, keeping their order (the smallest code gets id 0)."""
    return torch.unique(codes, sorted=True, return_inverse=True)[1]


def cumulative_labels(assignments: torch.Tensor, clusters: int) -> torch.Tensor:
    """The cell of each sample across the clusterings `assignments` [S, N]: consecutive ids of
    y = Σ_s c_s·K^s.

    Built one clustering at a time as c_s·G + id (G the cells so far), which orders the cells
    as y does (y's earlier terms are below K^s) without ever forming K^S, so it cannot
    overflow however many stages there are.
    """
    if assignments.ndim != 2 or assignments.shape[0] == 0:
        raise ValueError("assignments must be [stages >= 1, samples]")
    if assignments.min() < 0 or assignments.max() >= clusters:
        raise ValueError(f"cluster ids must lie in 0..{clusters - 1}")
    ids = torch.zeros(assignments.shape[1], dtype=torch.long, device=assignments.device)
    cells = 1
    for clustering in assignments:
        ids = consecutive_ids(clustering.long() * cells + ids)
        cells = int(ids.max()) + 1
    return ids


def stage_pseudo_labels(assignments: torch.Tensor, clusters: int, mode: str) -> torch.Tensor:
    """Pseudo-labels from the clusterings so far: `cumulative` (every stage) or `last_stage`."""
    if mode == "cumulative":
        return cumulative_labels(assignments, clusters)
    if mode == "last_stage":
        return consecutive_ids(assignments[-1].long())
    raise ValueError(f"labels must be cumulative or last_stage (got {mode!r})")


# -- batches from one group -----------------------------------------------------------------
class ClusterBatches:
    """Index batches of a pseudo-labelling, each from one group where the group allows it.

    `epoch(e)` yields one LongTensor per step: rank r's slice of the global batch (every
    rank gets a disjoint shard of the same batch, hence the same group). The batches are a
    function of (labels, batch_size, seed, epoch) only. `len()` equals the random
    baseline's `N // B`, so the lr schedule does not change between stages.
    """

    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split evenly over {world_size} workers")
        labels = labels.detach().cpu().long()
        if labels.numel() < batch_size:
            raise ValueError(f"{labels.numel()} samples are fewer than one batch of {batch_size}")
        if labels.min() < 0:
            raise ValueError("every sample needs a pseudo-label (found a negative id)")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        order = torch.argsort(labels, stable=True)
        self.group_sizes = torch.bincount(labels)
        self.groups = [g for g in torch.split(order, self.group_sizes.tolist()) if g.numel()]
        self.num_samples = labels.numel()
        full = sum(g.numel() // batch_size for g in self.groups)
        remainder = sum(g.numel() % batch_size for g in self.groups)
        self.pure_batches, self.mixed_batches = full, remainder // batch_size
        self.left_out = remainder % batch_size

    def __len__(self) -> int:
        return self.pure_batches + self.mixed_batches

    @property
    def samples_per_epoch(self) -> int:
        return len(self) * self.batch_size

    def epoch_batches(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batches of one epoch [steps, B] and whether each one is mixed [steps]."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        B = self.batch_size
        pure: list[torch.Tensor] = []
        rest: list[torch.Tensor] = []
        for index in torch.randperm(len(self.groups), generator=generator).tolist():
            group = self.groups[index]
            members = group[torch.randperm(group.numel(), generator=generator)]
            whole = members.numel() // B * B
            pure.append(members[:whole].view(-1, B))
            rest.append(members[whole:])
        pool = torch.cat(rest)
        mixed = pool[: self.mixed_batches * B].view(-1, B)
        batches = torch.cat([*pure, mixed])
        is_mixed = torch.arange(batches.shape[0]) >= self.pure_batches
        # Interleave groups over the epoch: the optimiser never sees one group for long.
        shuffle = torch.randperm(batches.shape[0], generator=generator)
        return batches[shuffle], is_mixed[shuffle]

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        batches, _ = self.epoch_batches(epoch)
        for batch in batches:
            yield torch.tensor_split(batch, self.world_size)[self.rank]


def describe_groups(sizes: list[int], sampler: ClusterBatches | None) -> str:
    """One log line: how many groups, how large, and what a stage trains on per epoch."""
    ordered = sorted(sizes)
    line = (
        f"{len(sizes)} pseudo-label groups, sizes min {ordered[0]} / median {ordered[len(ordered) // 2]} "
        f"/ max {ordered[-1]}"
    )
    if sampler is not None:
        line += (
            f"; per epoch {sampler.samples_per_epoch} samples in {sampler.pure_batches} single-group and "
            f"{sampler.mixed_batches} mixed batches, {sampler.left_out} left out (N mod B)"
        )
    return line


# -- masks of other groups' negatives -------------------------------------------------------
def batch_negative_mask(labels_local: torch.Tensor, labels_all: torch.Tensor, offset: int) -> torch.Tensor:
    """[2b, 2B-2] True where an NT-Xent negative has the anchor's pseudo-label.

    Columns follow `negative_candidate_index` (candidates cat([z1_all, z2_all])), so the
    mask plugs into `nt_xent(..., negative_mask=...)`; `labels_all` is the global batch's
    labels in rank order and the local block starts at `offset`.
    """
    b, B = labels_local.shape[0], labels_all.shape[0]
    anchors = torch.cat([labels_local, labels_local])
    candidates = torch.cat([labels_all, labels_all])
    columns = negative_candidate_index(b, B, offset, labels_local.device)
    return candidates[columns] == anchors[:, None]


def queue_negative_mask(anchor_labels: torch.Tensor, queue_labels: torch.Tensor) -> torch.Tensor:
    """[b, K] True where a queue key is kept as a negative: same pseudo-label as the anchor,
    or no label (-1: the random initial keys, which belong to no group)."""
    return (queue_labels[None, :] == anchor_labels[:, None]) | (queue_labels[None, :] < 0)
