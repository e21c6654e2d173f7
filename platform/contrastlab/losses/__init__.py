"""Contrastive losses as pure functions of tensors (no module state, no distributed calls).

Distributed callers pass the globally gathered tensors in explicitly. Every loss computes
its math with autocast off, in at least float32: bf16/fp16 inputs are reduced in float32,
float64 inputs stay float64 (tests/test_losses_precision.py checks each loss). Each returns
the mean loss over the local anchors unless its docstring says otherwise.
"""

from contrastlab.losses.contrastive import (
    anchor_indices,
    float32_math,
    info_nce_from_similarities,
    negative_candidate_index,
    nt_xent,
    positive_negative_similarities,
)
from contrastlab.losses.debiased import (
    DEBIAS_COUNTS,
    dcl_loss,
    debiased_loss_from_similarities,
    debiased_negative_term,
    hardness_weights,
    hcl_loss,
    sscl_loss,
)
from contrastlab.losses.moco import fifo_enqueue, mochi_loss, moco_logits, moco_loss
from contrastlab.losses.oucl import (
    CIRCLE_MODES,
    MARGIN_GRADS,
    MARGIN_TYPES,
    margin_injected_loss,
    margins,
    oucl_loss,
    two_view_scores,
)
from contrastlab.losses.soft_label import label_entropy, mixup_labels, slr_soft_labels, soft_cross_entropy
from contrastlab.losses.synthetic import (
    MIX_MODES,
    hard_pool,
    mochi_negatives,
    synthesize_negatives,
    synthetic_similarities,
)

__all__ = [
    "CIRCLE_MODES",
    "DEBIAS_COUNTS",
    "MARGIN_GRADS",
    "MARGIN_TYPES",
    "MIX_MODES",
    "anchor_indices",
    "dcl_loss",
    "debiased_loss_from_similarities",
    "debiased_negative_term",
    "fifo_enqueue",
    "float32_math",
    "hard_pool",
    "hardness_weights",
    "hcl_loss",
    "info_nce_from_similarities",
    "label_entropy",
    "margin_injected_loss",
    "margins",
    "mixup_labels",
    "mochi_loss",
    "mochi_negatives",
    "moco_logits",
    "moco_loss",
    "negative_candidate_index",
    "nt_xent",
    "oucl_loss",
    "positive_negative_similarities",
    "slr_soft_labels",
    "soft_cross_entropy",
    "sscl_loss",
    "synthesize_negatives",
    "synthetic_similarities",
    "two_view_scores",
]
