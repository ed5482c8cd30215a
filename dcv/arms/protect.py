"""Arm `protect`: circuit-protected SFT. SFT whose loss adds a penalty that keeps the base's important heads doing
their base job on prior-capability text (the "selective circuit protection" the study points to).

    loss = SFT loss + weight * sum_c (1/|caps|) sum_{h in C(c)} w_h * mean_{x, t} ||a_h(M, x)_t - a_h(M0, x)_t||^2 / s_h

- the prompts x are the clean prompts of the *protection split* (`data/prepared/protection/`), drawn from the
  capability generators disjoint from the validation and probe sets: the held-out probes are never trained on;
- the heads C(c) and weights w_h = |e_h(M0, c)| / sum_{C(c)} |e_h| come from head effects measured on that split by
  `dcv.circuits` inside the arm (before training, on the base): the smallest base top-k whose faithfulness reaches
  `faithfulness_target`, or the top `top_k`; the pipeline's DAG has no cycle through extract-circuits;
- a_h is head h's slice of the input of `o_proj` at every real position t; s_h = mean_{x,t} ||a_h(M0, x)_t||^2 makes
  the penalty scale-free (1 = as far from the base as the base head's own size).

Each optimizer step draws `batch_size` protection prompts, cycling through a seeded permutation (deterministic).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dcv.arms.registry import Arm, TrainJob, register
from dcv.arms.sft import SFTArmConfig, sft_trainer


class ProtectionConfig(BaseModel):
    """Which heads are protected, and how strongly."""

    model_config = ConfigDict(extra="forbid", strict=True)

    weight: float = Field(1.0, ge=0.0, le=1e6, description="lambda: weight of the head-activation penalty (0 = plain SFT).")
    heads: Literal["faithfulness", "top_k"] = Field("faithfulness", description="faithfulness: per capability the smallest base top-k whose faithfulness reaches faithfulness_target; top_k: the top_k heads by |effect|.")
    faithfulness_target: float = Field(0.8, gt=0.0, le=1.0, description="Faithfulness the protected circuit of each capability must reach (heads: faithfulness).")
    top_k: int = Field(4, ge=1, le=100_000, description="Heads per capability (heads: top_k).")
    method: Literal["exact", "eap", "eap-ig"] = Field("exact", description="Circuit method of the head effects (dcv.circuits).")
    batch_size: int = Field(16, ge=1, le=65536, description="Protection prompts per optimizer step.")
    seed: int = Field(0, ge=0, description="Seed of the order in which protection prompts are drawn.")


class ProtectArmConfig(SFTArmConfig):
    """SFT with the protection penalty."""

    match_budget_of: str | None = Field("sft", description="Another arm whose prompts per step, max_steps and checkpoint steps this arm must equal (null: none).")
    protection: ProtectionConfig = Field(default_factory=ProtectionConfig)


def select_heads(model, tok, probe_sets: dict[str, list[dict]], cfg: ProtectionConfig, batch_size: int = 64) -> dict:
    """Per capability of the protection split: the protected heads of the base, their weights and F there."""
    import torch

    from dcv.circuits.extract import extract, k_at
    from dcv.circuits.pairs import pair_batches

    out = {}
    with torch.no_grad():
        for cap, rows in sorted(probe_sets.items()):
            x = extract(model, pair_batches(tok, rows, batch_size, f"protection/{cap}"), method=cfg.method)
            order = x.curve.order
            if cfg.heads == "top_k":
                k = min(cfg.top_k, len(order))
            else:
                k = k_at(x.curve, cfg.faithfulness_target)[0] or len(order)
            heads = order[:k]
            e = [abs(float(x.effects.mean[l, h])) for l, h in heads]
            total = sum(e) or 1.0
            out[cap] = {"heads": [list(h) for h in heads], "weights": [v / total for v in e],
                        "faithfulness": x.curve.f[x.curve.k.index(k)] if k in x.curve.k else None}
    return out


class HeadPenalty:
    """The protection penalty of a model: its protected heads' activations against the base's on the split."""

    def __init__(self, tok, probe_sets: dict[str, list[dict]], selection: dict, cfg: ProtectionConfig):
        import torch

        from dcv.batching import encode
        from dcv.circuits.hooks import find_heads, head_hooks

        self.cfg = cfg
        rows = [(cap, r["clean"]) for cap in sorted(probe_sets) for r in probe_sets[cap]]
        self.caps = [c for c, _ in rows]
        self.ids = encode(tok, [t for _, t in rows])
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        n_caps = len({c for c in self.caps})
        # per (layer, head): weight / n_caps of every capability that protects it, and its capability
        self.terms = [(cap, l, h, w / n_caps) for cap, sel in sorted(selection.items())
                      for (l, h), w in zip(sel["heads"], sel["weights"])]
        self.layers = sorted({l for _, l, _, _ in self.terms})
        gen = torch.Generator().manual_seed(cfg.seed)
        self.order = torch.randperm(len(self.ids), generator=gen).tolist()
        self.cursor = 0
        self.find_heads, self.head_hooks = find_heads, head_hooks
        self.base_z: dict[int, torch.Tensor] = {}

    def record_base(self, model) -> None:
        """The base's activations on every protection prompt (call with the base weights, on the training device):
        {layer: [n, pos, head, d_head]}, and each protected head's scale s_h."""
        was = model.training
        model.eval()
        z, mask = self._activations(model, list(range(len(self.ids))), grad=False)
        model.train(was)
        self.base_z = {l: v.detach() for l, v in z.items()}
        self.scale = {(l, h): float((self.base_z[l][:, :, h].float().pow(2).sum(-1) * mask).sum() / mask.sum())
                      for _, l, h, _ in self.terms}

    def _batch(self, idx: list[int], device):
        import torch

        width = max(len(self.ids[i]) for i in idx)
        ids = torch.full((len(idx), width), self.pad, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for r, i in enumerate(idx):  # right padding: causal attention leaves every real position as unpadded
            ids[r, : len(self.ids[i])] = torch.tensor(self.ids[i])
            mask[r, : len(self.ids[i])] = 1
        return ids.to(device), mask.to(device)

    def _activations(self, model, idx: list[int], grad: bool):
        """o_proj inputs of the protected layers for rows `idx`: {layer: [batch, pos, head, d_head]}, and the mask."""
        import torch

        sites = self.find_heads(model)
        dev = next(model.parameters()).device
        ids, mask = self._batch(idx, dev)
        kept: dict[int, torch.Tensor] = {}

        def keep(layer: int, z):
            if layer in self.layers:
                kept[layer] = z
            return None

        with torch.set_grad_enabled(grad), self.head_hooks(sites, keep):
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        return kept, mask.float()

    def __call__(self, model):
        """The penalty on the next `batch_size` protection prompts (a scalar with grad)."""
        import torch

        n = len(self.order)
        idx = [self.order[(self.cursor + i) % n] for i in range(min(self.cfg.batch_size, n))]
        self.cursor = (self.cursor + len(idx)) % n
        z, mask = self._activations(model, idx, grad=True)
        sel = torch.tensor(idx)
        total = None
        for cap, l, h, w in self.terms:
            rows = torch.tensor([i for i, j in enumerate(idx) if self.caps[j] == cap], dtype=torch.long)
            if rows.numel() == 0:
                continue
            width = z[l].shape[1]
            z0 = self.base_z[l][sel[rows], :width, h].to(z[l].device, z[l].dtype)  # [rows, pos, d_head]
            m = mask[rows.to(mask.device)]
            d = (z[l][rows.to(z[l].device), :, h].float() - z0.float()).pow(2).sum(-1)  # [rows, pos]
            term = w * (d * m).sum() / m.sum().clamp(min=1) / max(self.scale[(l, h)], 1e-12)
            total = term if total is None else total + term
        if total is None:
            return torch.zeros((), device=next(model.parameters()).device)
        return total


def train_protect(job: TrainJob):
    from trl import SFTTrainer

    cfg: ProtectArmConfig = job.cfg
    penalty = HeadPenalty(job.tok, job.inputs["protection"], job.inputs["prepared"]["heads"], cfg.protection)

    class ProtectedSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss adds the head penalty (divided by the accumulation steps, as the SFT loss is)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            penalty.record_base(self.model)  # still the base's weights, now on the training device

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs=False, num_items_in_batch=num_items_in_batch)
            if cfg.protection.weight == 0:
                return loss
            p = penalty(model)
            self._metrics["train"]["protect_penalty"].append(float(p.detach()))
            return loss + cfg.protection.weight * p / self.args.gradient_accumulation_steps

    trainer = sft_trainer(job, ProtectedSFTTrainer)
    trainer.train()
    return trainer.model


def prepare(model, tok, cfg: ProtectArmConfig, inputs: dict) -> dict:
    """Once per arm, on the base: the protected heads of each capability (also written to the arm's metrics)."""
    return {"heads": select_heads(model, tok, inputs["protection"], cfg.protection)}


def describe(cfg: ProtectArmConfig) -> str:
    p = cfg.protection
    which = (f"each capability's smallest base circuit with F >= {p.faithfulness_target:g}" if p.heads == "faithfulness"
             else f"each capability's top {p.top_k} heads")
    return (f"SFT on the `{cfg.completion_form}` form + {p.weight:g} x head-activation penalty to the base on "
            f"{which} (protection split, `{p.method}` effects)")


ARM = register(Arm("protect", ProtectArmConfig, train_protect, describe, color="#2ca02c", inputs=("protection",),
                   prepare=prepare))
