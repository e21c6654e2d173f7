"""Hyperparameter studies: search-space specs → Optuna define-by-run → Ray Tune over Ray Train.

- `load_spec(path, overrides=(), num_samples=None, study_storage=None) -> StudySpec`
- `run_study(spec, output, address=None, ray_storage=None, resume=False) -> StudyOutcome`
- `StudySearcher`: OptunaSearch that records ASHA-stopped trials as PRUNED and failures
  as FAIL with their reason.
"""

from contrastlab.tuning.space import SearchSpace
from contrastlab.tuning.space_spec import parse_space
from contrastlab.tuning.spec import StudySpec, diff_specs, load_spec, spec_from_dict

__all__ = ["SearchSpace", "StudySpec", "diff_specs", "load_spec", "parse_space", "spec_from_dict"]
