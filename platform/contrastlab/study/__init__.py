"""The floor both kinds of study stand on: `contrastlab tune` and `contrastlab ablate`.

- `experiment`: a spec's base experiment (`base_config` + inline `base`), its top-level
  key check, the deep merge, and the seed floor that separates tuning from evaluation.
- `validation`: pydantic models of spec sections, with one-line `ConfigError`s.
- `values`: value equality that keeps YAML `true` apart from 1, and safe folder names.
- `metrics`: a Tune result's numeric metrics and TensorBoard hparam values.
- `resources`: the driver's resources and how many trials fit a cluster at once.
- `trial`: one run inside a Tune trial, on its path (`run_in_trial`, `fit_in_trial`, `TrialFailed`).
- `fast`: the fast path of a one-worker trial (`fit_here`, the per-actor dataset cache).
- `internals`: every access to a private attribute of Ray or Optuna, in one place.

Ray itself is joined or started by `contrastlab.raytrain.session.RaySession`, one layer
below, which `contrastlab train --workers` uses too. Nothing here imports
`contrastlab.tuning` or `contrastlab.ablation`.
"""
