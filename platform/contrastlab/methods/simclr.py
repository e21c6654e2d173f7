"""SimCLR (Chen et al., ICML 2020): NT-Xent over two views, negatives from the global batch."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from contrastlab.losses import nt_xent
from contrastlab.methods.base import Component, LossOutput, TrainBatch, TwoViewMethod
from contrastlab.methods.registry import register_method
from contrastlab.sections import MethodConfig


class SimCLRConfig(MethodConfig):
    name: Literal["simclr"] = "simclr"
    temperature: float = Field(0.5, gt=0, description="τ of NT-Xent (Chen et al. 2020)")

    components: ClassVar[tuple[Component, ...]] = ()


@register_method("simclr")
class SimCLR(TwoViewMethod):
    config_class = SimCLRConfig

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        z1, z2 = self.project(batch.views)
        z1_all, z2_all, offset = self.gather(z1, z2)
        loss = nt_xent(z1, z2, self.mcfg.temperature, z1_all, z2_all, offset)
        return LossOutput(loss)
