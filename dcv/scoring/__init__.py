"""Circuit measures of docs/design.md ("Measures") computed from the circuits JSON of stage `extract-circuits`.

- `circuits`: reading and checking `circuits/<model id>/<capability>.json` (model ids `base`, `<arm>/seed-<s>/step-<n>`);
- `measures`: the base circuit C0, head vulnerability v_h, circuit vulnerability CV, preserved fraction P, rank
  correlation, faithfulness retained, cross-model head effect;
- `dcv`: DCV = CV^sft - CV^rl per head and per circuit, at equal steps and at equal target accuracy, with the
  hierarchical bootstrap of `dcv.bootstrap` (pairs within seeds, seeds across).

Nothing here knows about DVC or params.yaml; `stages/score_dcv.py` passes a `ScoreConfig` in.
"""

from dcv.scoring.config import ScoreConfig

__all__ = ["ScoreConfig"]
