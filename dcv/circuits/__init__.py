"""Attention-head circuits of any Hugging Face decoder whose attention ends in `self_attn.o_proj` (shared/DESIGN.md,
"Measures"): per-head hooks, head scores by registered methods (`exact` / `eap` / `eap-ig` / `dbm`) behind one interface,
circuits and their faithfulness, cross-model head patching, heatmaps. Torch only; nothing here knows of DVC or
params.yaml.

    hooks         o_proj pre-hooks: find the heads (plain or peft-wrapped), read or replace each head's slice
    pairs         probe pairs as right-padded batches (answer at each row's last real token)
    patching      the metric, clean/corrupted runs (cached once), many interventions stacked in one forward
    effects       exact, eap, eap-ig: per-pair head effects, and HeadEffects
    dbm           Differentiable Binary Masking: a learnt mask per head and its binary circuit (HeadMask)
    methods       the registry of methods (name, function, knobs bound from the config, what it returns and may be
                  used for); bind(name, config)(model, batches) and head_effects(model, batches, method, ...)
    faithfulness  mean ablation, F(C_k | M) over circuit sizes, its area (cpr), smallest_k
    cross_model   a fine-tuned model's head activation put into the base
    rank          Spearman rho, top-k overlap, magnitude ratio
    heatmap       layers x heads PNG
    extract       one model x capability as the circuits JSON record; validation against the reference (exact)
    config        the `circuits` params section

The names below are imported on first use, so `dcv.circuits.config` loads without torch.
"""

from importlib import import_module

_EXPORTS = {"METHODS": "methods", "REGISTRY": "methods", "bind": "methods", "head_effects": "methods",
            "HeadEffects": "effects", "HeadMask": "dbm", "smallest_k": "faithfulness",
            "HeadSites": "hooks", "find_heads": "hooks", "PairBatch": "pairs", "pair_batches": "pairs"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"dcv.circuits.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dcv.circuits' has no attribute {name!r}")
