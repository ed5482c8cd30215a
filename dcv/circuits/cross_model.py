"""Cross-model head patching (Prakash et al. 2024): put a fine-tuned model's head activation a_h (on the clean
prompt) into the base model on the same clean prompt; the change in m, per head and pair, tells whether the
fine-tuned head still does the base head's job (about 0: it does; away from 0: it now writes something else)."""

from __future__ import annotations

import torch

from dcv.circuits.patching import ProbedModel, clean_layer_outputs, one_hot_heads, patched_metric
from dcv.errors import DcvError


def cross_model_effects(base: ProbedModel, donor: ProbedModel, heads_per_forward: int = 32) -> torch.Tensor:
    """m(base, clean, a_h from `donor`) - m(base, clean) per pair [pair, layer, head].

    Both must be probed on the same pairs, tokenised alike, with the same head grid.
    """
    if base.shape != donor.shape or base.sites.d_head != donor.sites.d_head:
        raise DcvError(f"cross-model patching needs the same heads: base {base.shape} x {base.sites.d_head}, "
                       f"other {donor.shape} x {donor.sites.d_head}")
    choice = one_hot_heads(base.shape)
    per_batch = []
    for rb, rd in zip(base.runs, donor.runs, strict=True):
        if rb.batch.index != rd.batch.index or not torch.equal(rb.batch.clean.cpu(), rd.batch.clean.cpu()):
            raise DcvError("cross-model patching needs the same probe pairs tokenised to the same ids in both models")
        src = [z.to(rb.clean_z[0].device, rb.clean_z[0].dtype) for z in rd.clean_z]
        m = patched_metric(base.model, base.sites, rb.batch, [src], choice, heads_per_forward,
                           clean_layer_outputs(base.model, base.sites, rb.batch))
        per_batch.append((m - rb.m_clean[None]).T.reshape(len(rb.batch), *base.shape))
    return base.gather(per_batch)
