"""MCL's switches, its per-stage epoch budget and lr schedule (Zhang et al., arXiv 2402.11816).

The method itself (stages, clustering, the loss) is `contrastlab.methods.mcl`.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Literal

from pydantic import Field, model_validator

from contrastlab.methods.base import Component
from contrastlab.methods.moco import MoCoKeyConfig
from contrastlab.methods.registry import get_method_class
from contrastlab.optim import warmup_cosine
from contrastlab.sections import MethodConfig

PAPER = "Zhang et al., arXiv 2402.11816"


class MCLConfig(MoCoKeyConfig):
    """MCL's switches; the MoCo v2 key-encoder fields (shuffle_bn, projector_bn) apply to base moco only."""

    name: Literal["mcl"] = "mcl"
    base: Literal["simclr", "moco"] = Field(
        "simclr", description=f"the contrastive method every stage trains (SimCLR in the paper's image runs; {PAPER})"
    )
    temperature: float = Field(0.5, gt=0, description=f"τ of the base method's InfoNCE logits ({PAPER})")
    queue_size: int = Field(4096, ge=1, description="base moco only: K past keys kept as negatives (He et al. 2020)")
    momentum: float = Field(0.99, ge=0, le=1, description="base moco only: EMA coefficient of the key encoder")
    symmetric: bool = Field(False, description="base moco only: also use view 2 as query (symmetrised loss)")
    stages: int = Field(
        2,
        ge=0,
        le=16,
        description=f"T, the stages after stage 0; 0 trains the base method alone, exactly ({PAPER})",
    )
    stage_epochs: list[int] | None = Field(
        None,
        description=(
            "epochs of each of the T+1 stages, e.g. [20, 10, 10]; they must sum to optim.epochs. Unset: "
            "optim.epochs split evenly (earlier stages take the remainder). Not used when stages is 0, so "
            f"switching the stages off keeps the budget ({PAPER})"
        ),
    )
    clusters: int = Field(10, ge=2, description=f"K of the k-means run on each finished stage (paper: 10; {PAPER})")
    kmeans_restarts: int = Field(
        3, ge=1, description="k-means++ restarts; the clustering with the lowest inertia is kept (scikit-learn n_init)"
    )
    negatives: Literal["cluster", "random"] = Field(
        "cluster",
        description=(
            "cluster: feature-aware negatives, all from the anchor's pseudo-label group; random: every stage "
            f"trains on random batches, an ensemble of independent models ({PAPER})"
        ),
    )
    labels: Literal["cumulative", "last_stage"] = Field(
        "cumulative",
        description=f"pseudo-label: the cell across the clusterings of all earlier stages, or the last one ({PAPER})",
    )
    sampling: Literal["cluster_batches", "mask_other_clusters"] = Field(
        "cluster_batches",
        description=(
            "cluster_batches: every batch drawn from one group (the paper's sampler); mask_other_clusters: "
            "random batches with other groups' negatives removed from the loss, which also works on a MoCo "
            f"queue ({PAPER})"
        ),
    )
    small_groups: Literal["merge", "merge_masked"] = Field(
        "merge_masked",
        description=(
            "cluster_batches: group remainders smaller than a batch are merged into mixed batches; "
            "merge_masked also masks other groups' negatives there, so every negative still shares the "
            f"anchor's group (the paper's sampler drops them instead; {PAPER})"
        ),
    )
    init: Literal["scratch", "previous_stage"] = Field(
        "scratch",
        description=f"stage t's encoder and head: freshly initialised, or a copy of stage t-1's ({PAPER})",
    )
    integration: Literal["concat", "last_only"] = Field(
        "concat",
        description=(
            "representation: normalize(concat(normalize(f_0(x)), ..., normalize(f_T(x)))) (cross-stage "
            f"integration) or the last stage's backbone alone ({PAPER})"
        ),
    )

    components: ClassVar[tuple[Component, ...]] = (
        Component("stages", "stages", 0, "extra stages T; 0 → the base method"),
        Component("negatives", "negatives", "random", "feature-aware negatives; random → ensemble of stages"),
        Component("labels", "labels", None, "cumulative | last_stage"),
        Component("integration", "integration", None, "concat | last_only"),
        Component("sampling", "sampling", None, "cluster_batches | mask_other_clusters"),
        Component("init", "init", None, "scratch | previous_stage"),
        Component("small_groups", "small_groups", None, "merge | merge_masked"),
    )

    @model_validator(mode="after")
    def _consistent(self) -> MCLConfig:
        if self.base == "moco" and self.sampling == "cluster_batches" and self.negatives == "cluster" and self.stages:
            raise ValueError(
                "sampling cluster_batches with base moco: the queue mixes groups; use sampling mask_other_clusters"
            )
        if self.stages and self.stage_epochs is not None:
            if len(self.stage_epochs) != self.stages + 1 or min(self.stage_epochs) < 1:
                raise ValueError(f"stage_epochs: {self.stages + 1} positive epoch counts (stages + 1)")
        return self


def resolve_stage_epochs(mcfg: MCLConfig, total_epochs: int) -> list[int]:
    """Epochs per stage, checked against the run's budget (optim.epochs)."""
    count = mcfg.stages + 1
    if mcfg.stages == 0:
        return [total_epochs]
    if mcfg.stage_epochs is None:
        if total_epochs < count:
            raise ValueError(f"optim.epochs ({total_epochs}) must give each of the {count} MCL stages an epoch")
        share, extra = divmod(total_epochs, count)
        return [share + (1 if s < extra else 0) for s in range(count)]
    if sum(mcfg.stage_epochs) != total_epochs:
        raise ValueError(
            f"method.stage_epochs {mcfg.stage_epochs} sums to {sum(mcfg.stage_epochs)} epochs but optim.epochs is "
            f"{total_epochs}: make them agree, or leave method.stage_epochs unset to split optim.epochs evenly"
        )
    return list(mcfg.stage_epochs)


def base_method_config(mcfg: MCLConfig) -> MethodConfig:
    fields: dict[str, Any] = {"name": mcfg.base, "temperature": mcfg.temperature}
    if mcfg.base == "moco":
        fields.update(
            queue_size=mcfg.queue_size,
            momentum=mcfg.momentum,
            symmetric=mcfg.symmetric,
            shuffle_bn=mcfg.shuffle_bn,
            shuffle_bn_groups=mcfg.shuffle_bn_groups,
            projector_bn=mcfg.projector_bn,
        )
    return get_method_class(mcfg.base).config_class.model_validate(fields)


def stage_lr_factor(start_step: int, steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The lr multiplier of one stage: warm-up + cosine over its own steps, zero elsewhere."""
    inner = warmup_cosine(steps, warmup_steps)

    def factor(step: int) -> float:
        local = step - start_step
        return inner(local) if 0 <= local < steps else 0.0

    return factor
