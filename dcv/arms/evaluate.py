"""What is measured at every checkpoint of an arm (and once on the base, as step 0 of every curve).

- `target_accuracy`: greedy completions on the target eval split, judged by the shared rule (`dcv.arms.rewards`);
- `probe_accuracy`: mean top-1 accuracy over the prior-capability probe sets (`probes` holds each capability);
- `forward_kl`: E_x KL(pi0 || pi) at the answer position on the target eval prompts (`dcv.kl`);
- `forward_kl_seq`: the same KL over whole completions, estimated on `kl_samples` completions per prompt sampled
  once from the base (for answers longer than one token; `dcv.kl.sequence_kl`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dcv.arms.config import CheckpointEvalConfig
from dcv.kl import answer_logprobs, completion_logprobs, forward_kl, sample_completions, sequence_kl


class CheckpointEvaluator:
    """Holds the eval data and the base's answer distribution; call it on a model to measure a checkpoint."""

    def __init__(self, base_model, tok, target_eval: list[dict], probe_sets: dict[str, list[dict]],
                 cfg: CheckpointEvalConfig, probe_dir: Path | str = "probes"):
        self.tok, self.target_eval, self.probe_sets, self.cfg = tok, target_eval, probe_sets, cfg
        self.probe_dir = Path(probe_dir)
        self.prompts = [r["prompt"] for r in target_eval]
        self.base_logprobs = answer_logprobs(base_model, tok, self.prompts, cfg.batch_size)
        self.samples = sample_completions(base_model, tok, self.prompts, cfg.kl_samples, cfg.kl_max_new_tokens,
                                          cfg.kl_seed)
        self.base_seq_logprobs = completion_logprobs(base_model, self.samples, cfg.batch_size)

    @torch.no_grad()
    def __call__(self, model) -> dict:
        from dcv.probes import evaluate_probes
        from dcv.target_eval import greedy_completions, score_target

        comps = greedy_completions(model, self.tok, self.prompts, self.cfg.max_new_tokens, self.cfg.batch_size)
        target = score_target(self.target_eval, comps)
        probes = {c: evaluate_probes(model, self.tok, rows, where=str(self.probe_dir / f"{c}.jsonl"))["accuracy"]
                  for c, rows in self.probe_sets.items()}
        kl = forward_kl(self.base_logprobs, answer_logprobs(model, self.tok, self.prompts, self.cfg.batch_size))
        kl_seq = sequence_kl(self.base_seq_logprobs, completion_logprobs(model, self.samples, self.cfg.batch_size))
        return {"target_accuracy": target["accuracy"],
                "probe_accuracy": sum(probes.values()) / len(probes) if probes else float("nan"),
                "probes": probes, "forward_kl": kl, "forward_kl_seq": kl_seq,
                "target_letter_distribution": target["letter_distribution"]}
