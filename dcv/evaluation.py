"""Measuring one model: target eval accuracy (greedy, judged by `dcv.answers`), the largest share of one letter among
its target answers, prior-capability probes (accuracy, logit difference), the forward KL to the base at the
answer position and over whole sampled completions (`dcv.kl`), and the L2 distance of its weights to the base's
(`param_distance`, a predictor baseline). Stage evaluate-forgetting calls it once per model and writes the results
as rows of `dcv.measurements`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dcv.memory import batch_size_type

PromptsPerBatch = batch_size_type(65_536)


class MeasureConfig(BaseModel):
    """How every model is measured (greedy target answers, forward KL samples, batch size)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_new_tokens: int = Field(4, ge=1, le=4096, description="Greedy tokens generated per target eval prompt.")
    batch_size: PromptsPerBatch = Field(128, description="Prompts per forward pass; auto: the largest "
                                                     "that fits the free memory of a CUDA device (dcv.memory), 128 elsewhere.")
    kl_samples: int = Field(4, ge=1, le=1024, description="Completions sampled from the base per target eval prompt for the sampled-sequence forward KL.")
    kl_max_new_tokens: int = Field(6, ge=1, le=4096, description="Longest sampled completion for the sampled-sequence KL (ends earlier at end-of-sequence).")
    kl_seed: int = Field(0, ge=0, description="Seed of the base's samples (the same samples score every model).")



class ModelEvaluator:
    """Holds the probe sets, the target eval rows and the base's answer distributions; `measure(model)` gives
    one model's figures. Built on the base model (the reference of both KLs)."""

    def __init__(self, base_model, tok, target_eval: list[dict], probe_sets: dict[str, list[dict]], cfg,
                 probe_where: dict[str, str] | None = None):
        from dcv.kl import answer_logprobs, completion_logprobs, sample_completions

        self.tok, self.target_eval, self.probe_sets, self.cfg = tok, target_eval, probe_sets, cfg
        self.where = probe_where or {c: c for c in probe_sets}
        from dcv.chat import rows_are_chat

        self.prompts = [r["prompt"] for r in target_eval]
        self.special = not rows_are_chat(target_eval)  # chat renderings hold their special tokens
        if cfg.batch_size == "auto":  # chosen once, on the base, for every model
            cfg = self.cfg = cfg.model_copy(update={"batch_size": fitted_batch_size(base_model, tok, self.prompts,
                                                                                     cfg, self.special)})
        self.base_logprobs = answer_logprobs(base_model, tok, self.prompts, cfg.batch_size, self.special)
        self.samples = sample_completions(base_model, tok, self.prompts, cfg.kl_samples, cfg.kl_max_new_tokens,
                                          cfg.kl_seed, batch_size=cfg.batch_size, special=self.special)
        self.base_seq_logprobs = completion_logprobs(base_model, self.samples, cfg.batch_size)
        self.base_params = base_parameters(base_model)

    def measure(self, model) -> dict:
        import torch

        with torch.no_grad():
            return self._measure(model)

    def _measure(self, model) -> dict:
        from dcv.kl import answer_logprobs, completion_logprobs, forward_kl, sequence_kl
        from dcv.probes import evaluate_probes
        from dcv.target_eval import greedy_completions, score_target

        comps = greedy_completions(model, self.tok, self.prompts, self.cfg.max_new_tokens, self.cfg.batch_size,
                                   self.special)
        target = score_target(self.target_eval, comps)
        letters = {k: v for k, v in target["letter_distribution"].items() if k != "none"}
        caps = {c: evaluate_probes(model, self.tok, rows, where=self.where[c], batch_size=self.cfg.batch_size)
                for c, rows in sorted(self.probe_sets.items())}
        kl = forward_kl(self.base_logprobs, answer_logprobs(model, self.tok, self.prompts, self.cfg.batch_size,
                                                            self.special))
        kl_seq = sequence_kl(self.base_seq_logprobs, completion_logprobs(model, self.samples, self.cfg.batch_size))
        return {"target_accuracy": target["accuracy"], "target_top_letter": max(letters.values()) if letters else None,
                "capabilities": caps, "forward_kl": kl, "forward_kl_seq": kl_seq,
                "param_distance": param_distance(self.base_params, model)}


AUTO_FALLBACK = 128  # forgetting.eval.batch_size auto off CUDA


def fitted_batch_size(model, tok, prompts: list[str], cfg: MeasureConfig, special: bool, memory=None) -> int:
    """The largest batch of the longest target prompt that greedy decoding (cfg.max_new_tokens, the longest pass of
    a measurement) and the answer log-probabilities run in within the free memory (dcv.memory)."""
    import torch

    from dcv.kl import answer_logprobs
    from dcv.memory import fit_batch
    from dcv.target_eval import greedy_completions

    longest = max(prompts, key=lambda q: (len(tok(q, add_special_tokens=special)["input_ids"]), q))

    def trial(b: int) -> None:
        with torch.no_grad():
            greedy_completions(model, tok, [longest] * b, cfg.max_new_tokens, b, special)
            answer_logprobs(model, tok, [longest] * b, b, special)

    device = next(model.parameters()).device
    return fit_batch(trial, len(prompts), device, AUTO_FALLBACK, memory=memory, what="forgetting.eval.batch_size")


def base_parameters(model) -> dict:
    """A CPU float32 copy of every named parameter of the base (the reference of `param_distance`; for a 3B model
    about 12 GB of host memory)."""
    import torch

    return {n: p.detach().to("cpu", dtype=torch.float32).clone() for n, p in model.named_parameters()}


def param_distance(base: dict, model) -> float:
    """||theta - theta_0||_2 over every parameter (float64 sums); a parameter the base lacks, or of another shape,
    is a ValueError naming it."""
    import torch

    total = 0.0
    names = dict(model.named_parameters())
    if set(names) != set(base):
        diff = sorted(set(names) ^ set(base))
        raise ValueError(f"param_distance: parameters differ from the base's: {diff[:3]}")
    for n, p in names.items():
        q = p.detach().to("cpu", dtype=torch.float64)
        if q.shape != base[n].shape:
            raise ValueError(f"param_distance: parameter {n}: shape {tuple(q.shape)}, the base's {tuple(base[n].shape)}")
        total += float(((q - base[n].double()) ** 2).sum())
    return total ** 0.5
