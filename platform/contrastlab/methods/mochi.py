"""MoCHi, hard negative mixing (Kalantidis et al., NeurIPS 2020), on MoCo v2.

For each query q_i the queue is ranked by similarity and its N most similar entries form
the hard set Q̃_i. Two kinds of synthetic negatives are made from it, as constants:

- type 1 (s of them): normalize(α·n_a + (1−α)·n_b), n_a, n_b ∈ Q̃_i, α ~ U(0, 1);
- type 2 (s' of them): normalize(β·q_i + (1−β)·n_a), n_a ∈ Q̃_i, β ~ U(0, 0.5).

They join query i's negatives only: logits [q·k+, q·Q, q·h] / τ, cross-entropy with
target 0. Keys, queue, EMA and Shuffle-BN are MoCo v2's (`MoCoBase`). With s = s' = 0
(or before `mix_start_epoch`) every step is MoCo v2's loss on the same tensors. SSCL's
`mix_mode` covers one mixing type at a time inside its own estimator; this method is the
baseline SSCL is compared with.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from contrastlab.losses import mochi_loss, mochi_negatives, moco_loss
from contrastlab.methods.base import Component, LossOutput, TrainBatch
from contrastlab.methods.moco import MoCoBase, MoCoKeyConfig
from contrastlab.methods.registry import register_method

PAPER = "Kalantidis et al., NeurIPS 2020"


class MoCHiConfig(MoCoKeyConfig):
    name: Literal["mochi"] = "mochi"
    temperature: float = Field(0.2, gt=0, description="τ of the InfoNCE logits (MoCo v2 default 0.2)")
    queue_size: int = Field(4096, ge=1, description="K past keys kept as negatives (He et al., CVPR 2020)")
    momentum: float = Field(0.99, ge=0, le=1, description="EMA coefficient m of the key encoder")
    hard_negatives: int = Field(
        1024, ge=1, description=f"N, the queue entries most similar to the query that are mixed ({PAPER})"
    )
    pair_negatives: int = Field(
        1024, ge=0, description=f"s, type-1 negatives mixed from pairs of hard negatives; 0: none ({PAPER})"
    )
    query_negatives: int = Field(
        512, ge=0, description=f"s', type-2 negatives mixing the query into a hard negative; 0: none ({PAPER})"
    )
    mix_start_epoch: int = Field(
        0, ge=0, description=f"epochs of plain MoCo v2 before mixing starts (a warm-up; 0: from the start) ({PAPER})"
    )

    components: ClassVar[tuple[Component, ...]] = (
        Component("pair_negatives", "pair_negatives", 0, "type-1 synthetic negatives (s); 0 → none"),
        Component("query_negatives", "query_negatives", 0, "type-2 synthetic negatives (s'); 0 → none"),
        Component("shuffle_bn", "shuffle_bn", False, "Shuffle-BN in the key encoder (MoCo v2)"),
        Component("projector_bn", "projector_bn", None, "BN in the projection head: false (MoCo v2) | true"),
    )

    @model_validator(mode="after")
    def _hard_set_fits_queue(self) -> MoCHiConfig:
        if self.hard_negatives > self.queue_size:
            raise ValueError(f"hard_negatives ({self.hard_negatives}) <= queue_size ({self.queue_size})")
        return self

    @property
    def mixes(self) -> bool:
        return self.pair_negatives + self.query_negatives > 0


@register_method("mochi")
class MoCHi(MoCoBase):
    config_class = MoCHiConfig

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        m: MoCHiConfig = self.mcfg
        x1, x2 = batch.views
        queue = self.queue.clone().detach()
        q = self.query(x1)
        k = self.keys(x2, batch.generator)
        self.remember_keys(k)
        if not (m.mixes and batch.epoch >= m.mix_start_epoch):
            return LossOutput(moco_loss(q, k, queue, m.temperature))
        synthetic = mochi_negatives(q, queue, m.hard_negatives, m.pair_negatives, m.query_negatives, batch.generator)
        loss = mochi_loss(q, k, queue, synthetic, m.temperature)
        # Mean cosine of the queries with their synthetic negatives: how hard the mixed points are.
        hardness = torch.einsum("bd,bsd->bs", q.detach().to(synthetic.dtype), synthetic).mean()
        return LossOutput(loss, {"synthetic_similarity": hardness})
