"""MetAug's configuration: its components and the released settings as switches.

Li et al., ICML 2022, "MetAug: Contrastive Learning via Meta Feature Augmentation".
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from contrastlab.losses.oucl import (
    CIRCLE_MODES,
    MARGIN_GRADS,
    MARGIN_TYPES,
    CircleMode,
    MarginGrad,
    MarginType,
)
from contrastlab.methods.base import Component
from contrastlab.sections import MethodConfig

PAPER = "Li et al., ICML 2022"


class MetAugConfig(MethodConfig):
    name: Literal["metaug"] = "metaug"
    loss: Literal["oucl", "infonce"] = Field(
        "oucl", description=f"contrastive loss: OUCL, the paper's unified loss, or InfoNCE/NT-Xent ({PAPER})"
    )
    gamma: float = Field(16.0, gt=0, description=f"OUCL scale γ; the loss is multiplied by 16/γ ({PAPER})")
    circle: CircleMode = Field(
        "off",
        description=(
            "Circle-style OUCL: full weights α and margins Δ (full), or the margins Δ alone with α = 1 "
            f"(delta_only, what the released switch computes); true/false read as full/off ({PAPER})"
        ),
    )
    circle_margin: float = Field(
        0.25, ge=0, le=1, description=f"relaxation margin m of the Circle-style OUCL (released default 0.25; {PAPER})"
    )
    temperature: float = Field(0.5, gt=0, description=f"τ of NT-Xent when loss is infonce ({PAPER} ablation)")
    oucl_rows: Literal["sample", "view"] = Field(
        "sample",
        description=(
            "OUCL term per image, contrasting both views' positives with all their negatives in one term as "
            f"the released code does (sample), or one term per anchor view (view) ({PAPER})"
        ),
    )
    generator: bool = Field(
        True, description=f"per-view meta feature generators g_v; off gives the contrastive baseline ({PAPER})"
    )
    generator_hidden: int = Field(
        2048, ge=1, description=f"hidden width of the generator MLP d→h→h→d (paper: 2048) ({PAPER})"
    )
    meta_update: Literal["second_order", "first_order", "frozen"] = Field(
        "second_order",
        description=(
            "how the generators learn: through θ' = θ − α∇θL with the graph kept (second_order, the paper), "
            f"with ∇θL treated as a constant (first_order), or not at all (frozen) ({PAPER})"
        ),
    )
    inner_lr: float = Field(
        1e-3, ge=0, description=f"α of the fast weights θ' = θ − α∇θL (released bb_learning_rate 0.001; {PAPER})"
    )
    generator_lr: float | None = Field(
        None,
        gt=0,
        description=(
            "learning rate of the generators at batch 256, scaled and scheduled like optim.lr "
            f"(None: optim.lr; released mt_learning_rate equals the encoder's) ({PAPER})"
        ),
    )
    aug_weight: float = Field(
        1e-5,
        ge=0,
        description=f"λ on the augmented losses L_aug (released 1e-5; tune on a log range 1e-6–1) ({PAPER})",
    )
    margin_type: Literal["off", MarginType] = Field(
        "large", description=f"margin-injected regularisation: which margins, or off ({PAPER})"
    )
    margin_weight: float = Field(
        1e-11,
        ge=0,
        description=f"β on L_MI (released 1e-11; tune on a log range 1e-12–1e-1) ({PAPER})",
    )
    margin_positive_weight: float = Field(
        1e-4, ge=0, description=f"c on the positive hinge of L_MI (released margin_hyper 1e-4; {PAPER})"
    )
    margin_in_encoder_step: bool = Field(
        True,
        description=(
            "L_MI also in the encoder step (released margin_injection=1); false keeps it in the meta step only "
            f"(margin_injection=2) ({PAPER})"
        ),
    )
    margin_grad: MarginGrad = Field(
        "keep",
        description=(
            "margins m± of L_MI inside the graph (keep, as the released code) or constants (detach); "
            f"this changes the meta-gradient ({PAPER})"
        ),
    )
    views: Literal["two_crops", "cmc_lab"] = Field(
        "two_crops",
        description=(
            "two augmented crops through one encoder (two_crops), or the released CMC-style views: one crop "
            f"in Lab, its L channel and its ab channels through one encoder each (cmc_lab; colour data) ({PAPER})"
        ),
    )
    negatives: Literal["batch", "memory_bank"] = Field(
        "batch",
        description=(
            "negatives from the (global) batch, or the released memory bank: bank_negatives entries drawn "
            f"per sample from a per-view bank of every training image's feature ({PAPER})"
        ),
    )
    bank_negatives: int = Field(1024, ge=1, description=f"K, bank entries drawn per sample (released 1024; {PAPER})")
    bank_momentum: float = Field(
        0.5, ge=0, lt=1, description=f"bank update M[i] ← normalize(m·M[i] + (1−m)·z_i) (released 0.5; {PAPER})"
    )
    eval_generator_features: bool = Field(
        False, description=f"also evaluate [g_1(z), g_2(z)] beside the encoder features ({PAPER})"
    )

    components: ClassVar[tuple[Component, ...]] = (
        Component("generator", "generator", False, "meta feature generators; off → OUCL/InfoNCE baseline"),
        Component("meta_update", "meta_update", None, "second_order | first_order | frozen"),
        Component("margin", "margin_type", "off", f"margin-injected regularisation ({' | '.join(MARGIN_TYPES)})"),
        Component("loss", "loss", None, "oucl | infonce"),
        # A choice, not an on/off switch: the default (off) is itself one of the forms compared.
        Component("circle", "circle", None, " | ".join(CIRCLE_MODES)),
        Component("margin_grad", "margin_grad", None, " | ".join(MARGIN_GRADS)),
        Component("views", "views", None, "two_crops | cmc_lab"),
        Component("negatives", "negatives", None, "batch | memory_bank"),
    )

    @field_validator("circle", mode="before")
    @classmethod
    def _circle_from_bool(cls, value):
        return {True: "full", False: "off"}[value] if isinstance(value, bool) else value
