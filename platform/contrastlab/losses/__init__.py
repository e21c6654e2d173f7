"""Contrastive losses as pure functions of tensors (no module state, no distributed calls).

Distributed callers pass the globally gathered tensors in explicitly.
"""

from contrastlab.losses.contrastive import (
    anchor_indices,
    info_nce_from_similarities,
    negative_candidate_index,
    nt_xent,
    positive_negative_similarities,
)
from contrastlab.losses.debiased import (
    dcl_loss,
    debiased_loss_from_similarities,
    debiased_negative_term,
    hardness_weights,
    hcl_loss,
    sscl_loss,
)
from contrastlab.losses.moco import fifo_enqueue, moco_logits, moco_loss
from contrastlab.losses.oucl import margin_injected_loss, margins, oucl_loss, two_view_scores
from contrastlab.losses.soft_label import label_entropy, mixup_labels, slr_soft_labels, soft_cross_entropy
from contrastlab.losses.synthetic import MIX_MODES, hard_pool, mochi_negatives, synthesize_negatives

__all__ = [
    "MIX_MODES",
    "anchor_indices",
    "dcl_loss",
    "debiased_loss_from_similarities",
    "debiased_negative_term",
    "fifo_enqueue",
    "hard_pool",
    "hardness_weights",
    "hcl_loss",
    "info_nce_from_similarities",
    "label_entropy",
    "margin_injected_loss",
    "margins",
    "mixup_labels",
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
    "two_view_scores",
]
