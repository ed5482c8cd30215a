"""Circuit measures of docs/design.md ("Measures") computed from the circuits JSON of stage `extract-circuits`.

- `circuits`: reading and checking `circuits/<model id>/<capability>.json` (model ids `base`, `<arm>/seed-<s>/step-<n>`,
  and `discovery/base`, the base on the discovery split);
- `measures`: the base circuit C0 (chosen on the discovery split), its guards, head vulnerability v_h, circuit
  vulnerability CV, preserved fraction P, rank correlation, faithfulness retained, cross-model head effect, the
  logit-difference drop;
- `dcv`: DCV(a, b) = CV^a - CV^b per head and per circuit, at equal steps and at equal target accuracy
  (interpolated), with intervals over the crossed pairs and seeds (`dcv.bootstrap`, `dcv.stats`) and the
  label-permutation tests of the sanity checks;
- `predictors`: which measure predicts forgetting (R² pooled, within arm, with an arm fixed effect, clustered by run);
- `scores`: the table of every measure of every checkpoint.

Nothing here knows about DVC or params.yaml; `stages/score_dcv.py` passes a `ScoreConfig` in.
"""

from dcv.scoring.config import ScoreConfig

__all__ = ["ScoreConfig"]
