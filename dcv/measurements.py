"""The measurement of every model, once: one typed table that every later computation reads.

Stage `evaluate-forgetting` loads the base and every checkpoint of every arm and seed once, measures it with
`dcv.evaluation.ModelEvaluator`, and writes one `Measurement` row per model and capability
(`measurements/models.csv`). Score-dcv
(the equal-accuracy choice), the forgetting summaries and the report read that table through `MeasurementTable`;
nothing measures a checkpoint a second time.

Per model (repeated on each of its rows): the model its arm and seed started from (`init`: the base, or another
arm's checkpoint that it continues, which is then that arm's step 0), target eval accuracy (greedy, judged by `dcv.answers`), the largest
share of one letter among its target answers (a collapse diagnostic), the forward KL E_x KL(pi0 || pi) at the
answer position (`forward_kl`, exact) and over whole completions (`forward_kl_seq`, sampled: `dcv.kl`), and the
L2 distance of its weights to the base's (`param_distance`). Per capability: top-1 accuracy and mean logit
difference on its forgetting split (`dcv.splits.FORGETTING`, disjoint from the pairs circuits are scored on). Benchmarks of lm-evaluation-harness are
rows too, with capability `lm_eval/<task>/<metric>` and the score as `accuracy` (no logit difference).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from dcv.errors import DcvError
from dcv.layout import BASE, ModelRef
from dcv.tables import read_table, write_table

LM_EVAL = "lm_eval/"


@dataclass(frozen=True)
class Measurement:
    """One model on one capability (or benchmark)."""

    model: str  # `base` or `<arm>/seed-<s>/step-<n>`
    arm: str  # `base` for the base
    seed: int | None
    step: int  # 0 for the base
    final: bool  # the last checkpoint of its seed
    capability: str  # a prior capability, or `lm_eval/<task>/<metric>`
    accuracy: float
    logit_diff: float | None
    target_accuracy: float
    target_top_letter: float | None  # the largest share of one letter among the target answers
    forward_kl: float
    forward_kl_seq: float
    param_distance: float | None = None  # ||theta - theta_0||_2; 0 for the base
    init: str = BASE  # the model its arm and seed trained from (`base`, or a checkpoint of another arm: `rl_sft`)

    @property
    def is_prior(self) -> bool:
        return not self.capability.startswith(LM_EVAL)


def rows_for(ref: ModelRef, m: dict, init: str = BASE) -> list[Measurement]:
    """Table rows of one model from `dcv.evaluation.ModelEvaluator`'s result (and lm-eval scores under `m["lm_eval"]`);
    `init`: the model its arm and seed started from."""
    common = dict(model=ref.id, arm=ref.arm, seed=ref.seed, step=ref.step, final=ref.final, init=init,
                  target_accuracy=m["target_accuracy"], target_top_letter=m["target_top_letter"],
                  forward_kl=m["forward_kl"], forward_kl_seq=m["forward_kl_seq"], param_distance=m.get("param_distance"))
    rows = [Measurement(capability=c, accuracy=v["accuracy"], logit_diff=v["logit_diff"], **common)
            for c, v in sorted(m["capabilities"].items())]
    for task, scores in sorted(m.get("lm_eval", {}).items()):
        rows += [Measurement(capability=f"{LM_EVAL}{task}/{metric}", accuracy=float(v), logit_diff=None, **common)
                 for metric, v in sorted(scores.items())]
    return rows


class MeasurementTable:
    """Queries over the rows of `measurements/models.csv`."""

    def __init__(self, rows: list[Measurement], path: Path | str = "measurements"):
        self.rows, self.path = rows, Path(path)
        self.by_model: dict[str, dict[str, Measurement]] = {}
        for r in rows:
            self.by_model.setdefault(r.model, {})[r.capability] = r
        if BASE not in self.by_model:
            raise DcvError(f"{self.path}: no rows of the base model")

    @classmethod
    def read(cls, path: Path) -> "MeasurementTable":
        return cls(read_table(path, Measurement), path)

    def write(self, path: Path) -> None:
        write_table(path, self.rows, Measurement)

    def model(self, mid: str) -> dict[str, Measurement]:
        if mid not in self.by_model:
            raise DcvError(f"{self.path}: no rows of model {mid}")
        return self.by_model[mid]

    def first(self, mid: str) -> Measurement:
        """Any row of a model (its model-level columns)."""
        return next(iter(self.model(mid).values()))

    @property
    def capabilities(self) -> list[str]:
        """The prior capabilities measured on the base, in name order."""
        return sorted(c for c, r in self.model(BASE).items() if r.is_prior)

    def arms(self) -> list[str]:
        return sorted({r.arm for r in self.rows if r.arm != BASE})

    def seeds(self, arm: str) -> list[int]:
        return sorted({r.seed for r in self.rows if r.arm == arm})

    def steps(self, arm: str, seed: int) -> list[int]:
        """Checkpoint steps of one arm and seed (the base, step 0, not included)."""
        return sorted({r.step for r in self.rows if r.arm == arm and r.seed == seed})

    def start(self, arm: str, seed: int) -> str:
        """The model one arm and seed trained from (its step 0): the base, or the checkpoint of another arm it
        continues (`init`); that model's own rows must be in the table."""
        inits = {r.init for r in self.rows if r.arm == arm and r.seed == seed}
        if len(inits) > 1:
            raise DcvError(f"{self.path}: {arm} seed {seed} has rows that start from different models {sorted(inits)}")
        mid = inits.pop() if inits else BASE
        if mid != BASE:
            self.model(mid)
        return mid

    def checkpoint(self, arm: str, seed: int, step: int) -> str:
        """Model id at (arm, seed, step); step 0 is the model it started from (`start`: the base for most arms)."""
        if step == 0:
            return self.start(arm, seed)
        mid = f"{arm}/seed-{seed}/step-{step}"
        self.model(mid)
        return mid

    def prior_accuracy(self, mid: str) -> float:
        """Mean top-1 accuracy over the prior capabilities."""
        m = self.model(mid)
        return statistics.fmean(m[c].accuracy for c in self.capabilities)

    def forgetting(self, mid: str) -> dict[str, float]:
        """accuracy(M0) - accuracy(Mx) per prior capability, and their mean (`mean`)."""
        base, m = self.model(BASE), self.model(mid)
        per = {c: base[c].accuracy - m[c].accuracy for c in self.capabilities}
        return {"mean": statistics.fmean(per.values()), **per}

    def target_curve(self, arm: str, seed: int) -> dict[int, float]:
        """step -> target accuracy of one arm and seed, step 0 = the model it started from (`start`)."""
        out = {0: self.first(self.start(arm, seed)).target_accuracy}
        out.update({st: self.first(self.checkpoint(arm, seed, st)).target_accuracy for st in self.steps(arm, seed)})
        return out
