"""The probe splits of every capability and the role of each (docs/design.md, "Probe splits").

A capability's held-out probe pairs are drawn by `dcv.toy.corpus.build_probe_sets` into disjoint splits, in this
order (each split depends only on the splits before it, so adding a later split leaves the earlier ones as they were):

- `validation`: the base's own check (stage base);
- `probes`, the *scoring* split: head effects of every model, hence CV, v_h, P, rank correlation, faithfulness
  retained, cross-model effects and the clean logit-difference drop (the name is kept from before the split);
- `protection`: the prompts arm protect trains its penalty on;
- `discovery`: the base circuit C0 (its heads and its size k), measured on the base only;
- `forgetting`: accuracy and logit difference of every model (forgetting).

So C0 is chosen on pairs it is not scored on (no winner's curse at the circuit's boundary), and the circuit measures
are computed on pairs that forgetting is not measured on. Disjoint means no (clean, corrupted) pair is shared; a
capability with few distinct clean prompts can still share clean prompts between splits, which `clean_overlap`
measures and prepare-data records.
"""

from __future__ import annotations

VALIDATION = "validation"
SCORING = "probes"
PROTECTION = "protection"
DISCOVERY = "discovery"
FORGETTING = "forgetting"
ORDER = (VALIDATION, SCORING, PROTECTION, DISCOVERY, FORGETTING)  # drawing order (never reorder: see above)

# The target task's own probe pairs (`dcv.target_pairs`, from the held-out target eval rows) are this capability, in
# the scoring and discovery splits only: a task capability, not a prior one (it has no forgetting split, since
# target accuracy is measured from the eval rows themselves, and no validation or protection split).
TARGET = "target"
TARGET_SPLITS = (SCORING, DISCOVERY)  # drawing order of the target pairs

# The base measured on the discovery split: its circuits file is `circuits/<DISCOVERY_MODEL>/<capability>.json`.
DISCOVERY_MODEL = f"{DISCOVERY}/base"


def clean_overlap(splits: dict[str, list[dict]], a: str, b: str) -> float:
    """Share of split `b`'s distinct clean prompts that also occur in split `a` (0: disjoint prompts)."""
    cb = {r["clean"] for r in splits[b]}
    return len(cb & {r["clean"] for r in splits[a]}) / len(cb) if cb else 0.0
