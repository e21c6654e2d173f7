"""The Optuna sampler of a study: TPE (grouped and multivariate where the space's parameters
differ from trial to trial), random, or NSGA-II for several objectives."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from contrastlab.tuning.space import SearchSpace
from contrastlab.tuning.spec import SamplerSpec


def tpe_settings(spec: SamplerSpec, space: SearchSpace | None = None) -> dict[str, Any]:
    """The TPE sampler's arguments. Where the parameters differ from trial to trial
    (conditions, lengths that follow a parameter), TPE is multivariate with `group`, so each
    set of parameters that occur together is modelled jointly instead of one by one; the
    spec's `multivariate` and `group` decide where given."""
    settings: dict[str, Any] = {"seed": spec.seed, "n_startup_trials": spec.n_startup_trials}
    conditional = space is not None and space.has_conditional_parameters
    multivariate = spec.multivariate if spec.multivariate is not None else (True if conditional else None)
    group = spec.group if spec.group is not None else (conditional and multivariate is not False)
    if group:
        multivariate = True
    if multivariate is not None:  # unset: Optuna's default
        settings["multivariate"] = multivariate
    if group:
        settings["group"] = True
    return settings


def make_sampler(spec: SamplerSpec, space: SearchSpace | None = None) -> optuna.samplers.BaseSampler:
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.type == "nsga2":  # several objectives only (the spec checks)
        return optuna.samplers.NSGAIISampler(seed=spec.seed)
    with warnings.catch_warnings():  # `group` is marked experimental in Optuna; the choice is the spec's
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(**tpe_settings(spec, space))


__all__ = ["make_sampler", "tpe_settings"]
