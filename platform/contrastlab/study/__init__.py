"""The floor both kinds of study stand on: `contrastlab tune` and `contrastlab ablate`.

- `experiment`: a spec's base experiment (`base_config` + inline `base`), its top-level
  key check, the deep merge, and the seed floor that separates tuning from evaluation.
- `validation`: pydantic models of spec sections, with one-line `ConfigError`s.
- `values`: value equality that keeps YAML `true` apart from 1, and safe folder names.
- `metrics`: a Tune result's numeric metrics and TensorBoard hparam values.
- `resources`: the driver's resources and how many trials fit a cluster at once.
- `trial`: one Ray Train run inside a Tune trial (`fit_in_trial`, `TrialFailed`).
- `ray_session`: joining or starting Ray, and stopping only what was started (`RaySession`).
- `internals`: every access to a private attribute of Ray or Optuna, in one place.

Nothing here imports `contrastlab.tuning` or `contrastlab.ablation`.
"""
