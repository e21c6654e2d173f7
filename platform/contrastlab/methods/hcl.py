"""DCL (Chuang et al., NeurIPS 2020) and HCL (Robinson et al., ICLR 2021) as methods.

Both keep SimCLR's setup (two views, negatives from the global batch, gathered across
workers) and change only the negative term of NT-Xent:

    Ng_i = max( (Σ_j w_ij·neg_ij − τ+·N·pos_i) / (1 − τ+),  N·e^(−1/τ) )

DCL is w = 1 (debiasing with the class prior τ+); HCL adds the hardness weights
w_ij = neg_ij^β / mean_k neg_ik^β. They exist so that an ablation can compare SimCLR, DCL,
HCL and SSCL side by side: τ+ = 0 gives SimCLR, β = 0 gives DCL.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from contrastlab.losses import dcl_loss, hcl_loss
from contrastlab.methods.base import Component, LossOutput, TrainBatch, TwoViewMethod
from contrastlab.methods.registry import register_method
from contrastlab.sections import MethodConfig

DCL_PAPER = "Chuang et al., NeurIPS 2020"
HCL_PAPER = "Robinson et al., ICLR 2021"


class DCLConfig(MethodConfig):
    name: Literal["dcl"] = "dcl"
    temperature: float = Field(
        0.5, gt=0, description=f"τ of the contrastive logits (official STL-10 runs: 0.5; {DCL_PAPER})"
    )
    tau_plus: float = Field(
        0.1,
        ge=0,
        lt=1,
        description=f"class prior τ+ of the debiased negative estimator; 0 gives NT-Xent ({DCL_PAPER})",
    )

    components: ClassVar[tuple[Component, ...]] = (
        Component("debias", "tau_plus", 0.0, "debiased negative estimator; τ+ = 0 → SimCLR"),
    )


class HCLConfig(MethodConfig):
    name: Literal["hcl"] = "hcl"
    temperature: float = Field(
        0.5, gt=0, description=f"τ of the contrastive logits (official STL-10 runs: 0.5; {HCL_PAPER})"
    )
    tau_plus: float = Field(
        0.1,
        ge=0,
        lt=1,
        description=f"class prior τ+ of the debiased estimator, applied after the weighting ({HCL_PAPER})",
    )
    beta: float = Field(
        1.0,
        ge=0,
        description=f"concentration β of the hardness weights exp(β·s/τ); 0 gives DCL ({HCL_PAPER})",
    )

    components: ClassVar[tuple[Component, ...]] = (
        Component("hard_sampling", "beta", 0.0, "hardness weights over the negatives; β = 0 → DCL"),
        Component("debias", "tau_plus", 0.0, "debiased negative estimator; τ+ = 0 → hardness weighting alone"),
    )


@register_method("dcl")
class DCL(TwoViewMethod):
    config_class = DCLConfig

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        z1, z2 = self.project(batch.views)
        z1_all, z2_all, offset = self.gather(z1, z2)
        m = self.mcfg
        return LossOutput(dcl_loss(z1, z2, m.temperature, m.tau_plus, z1_all, z2_all, offset))


@register_method("hcl")
class HCL(TwoViewMethod):
    config_class = HCLConfig

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        z1, z2 = self.project(batch.views)
        z1_all, z2_all, offset = self.gather(z1, z2)
        m = self.mcfg
        return LossOutput(hcl_loss(z1, z2, m.temperature, m.tau_plus, m.beta, z1_all, z2_all, offset))
