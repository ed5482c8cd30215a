"""Forward passes on probe pairs: the metric, the clean and corrupted runs every measure reuses, and patched runs
that stack many interventions (one per head, or one per circuit size) along the batch of a single forward.

metric m = logit(answer) - logit(distractor) at each row's last real token, in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from dcv.circuits.hooks import HeadSites, find_heads, head_hooks, layer_outputs, logits_at, skip_below
from dcv.circuits.pairs import PairBatch


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def frozen(model) -> Iterator[None]:
    """Parameters without grad while open (restored after): gradient passes that need dm/dz (or d/dmask) only, so
    autograd keeps no inputs for weight gradients (about 20% of an `eap` pass on CPU)."""
    flags = [(q, q.requires_grad) for q in model.parameters()]
    for q, _ in flags:
        q.requires_grad_(False)
    try:
        yield
    finally:
        for q, f in flags:
            q.requires_grad_(f)


def metric(model, ids: torch.Tensor | None, mask: torch.Tensor, last: torch.Tensor, answer: torch.Tensor,
           distractor: torch.Tensor, embeds: torch.Tensor | None = None, sites: HeadSites | None = None) -> torch.Tensor:
    """m per row [batch] (float32); give token `ids`, or `embeds` [batch, pos, d_model] instead. With the model's
    `sites`, the last layer's MLP runs at the answer position only (`logits_at`)."""
    with logits_at(model, last, sites):
        out = model(input_ids=ids, inputs_embeds=embeds, attention_mask=mask, use_cache=False)
    logits = out.logits[:, 0].float()  # [batch, vocab]
    return logits.gather(1, answer[:, None])[:, 0] - logits.gather(1, distractor[:, None])[:, 0]


@dataclass
class PairRun:
    """One batch of pairs run clean and corrupted: head activations per layer and m per pair."""

    batch: PairBatch  # on the model's device
    clean_z: list[torch.Tensor]  # per layer [batch, pos, head, d_head]
    corrupt_z: list[torch.Tensor]
    m_clean: torch.Tensor  # [batch] float32
    m_corrupt: torch.Tensor


@dataclass
class ProbedModel:
    """A model with its clean and corrupted runs on one probe set: the caches that every method reuses."""

    model: object
    sites: HeadSites
    runs: list[PairRun]
    n_pairs: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.sites.shape

    def gather(self, per_batch: list[torch.Tensor]) -> torch.Tensor:
        """Per-batch results [batch, ...] back in probe-row order [n_pairs, ...] (float32, CPU)."""
        out = torch.empty(self.n_pairs, *per_batch[0].shape[1:], dtype=torch.float32)
        for run, x in zip(self.runs, per_batch):
            out[torch.tensor(run.batch.index)] = x.detach().float().cpu()
        return out


@torch.no_grad()
def capture(model, sites: HeadSites, b: PairBatch, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Head activations per layer and m of one forward of `ids` (the clean or corrupted prompts of `b`)."""
    zs: list[torch.Tensor] = [None] * sites.n_layers  # type: ignore[list-item]

    def keep(layer: int, z: torch.Tensor) -> None:
        zs[layer] = z.clone()

    with head_hooks(sites, keep):
        m = metric(model, ids, b.mask, b.last, b.answer, b.distractor, sites=sites)
    return zs, m


def probe_model(model, batches: list[PairBatch]) -> ProbedModel:
    """Run every batch clean and corrupted once (two forwards a batch), keeping the head activations."""
    sites = find_heads(model)
    dev = model_device(model)
    runs = []
    for b in batches:
        b = b.to(dev)
        cz, mc = capture(model, sites, b, b.clean)
        xz, mx = capture(model, sites, b, b.corrupt)
        runs.append(PairRun(b, cz, xz, mc, mx))
    return ProbedModel(model, sites, runs, sum(len(b) for b in batches))


@torch.no_grad()
def clean_layer_outputs(model, sites: HeadSites, b: PairBatch) -> list:
    """Each decoder layer's output on the clean prompts of `b` (one forward): where `patched_metric` starts."""
    with layer_outputs(sites) as outs:
        metric(model, b.clean, b.mask, b.last, b.answer, b.distractor, sites=sites)
    return outs


def _chunks(first: list[int], group: int, by_layer: bool) -> list[tuple[int, int]]:
    """[start, end) of the interventions sharing a forward: at most `group`, and with `by_layer` one first patched
    layer each (interventions come sorted by it, as one_hot_heads makes them)."""
    out, s = [], 0
    for e in range(1, len(first) + 1):
        if e == len(first) or e - s == group or (by_layer and first[e] != first[s]):
            out.append((s, e))
            s = e
    return out


@torch.no_grad()
def patched_metric(model, sites: HeadSites, b: PairBatch, sources: list[list[torch.Tensor]], choice: torch.Tensor,
                   group: int, clean_outputs: list | None = None) -> torch.Tensor:
    """m of the clean prompts under R interventions, [R, batch] float32.

    `choice` [R, layer, head] says for each intervention where each head's activation comes from: 0 = its own
    (clean) value, s = `sources[s - 1][layer]` ([batch, pos, head, d_head]). `group` interventions share a forward
    (the clean batch stacked `group` times), so one forward patches many heads.

    With `clean_outputs` (`clean_layer_outputs` of `b`), a forward starts at the first layer its interventions
    patch: the layers below give their clean outputs without being computed, and forwards split where that layer
    changes. Patching one head at a time, this costs (L + 1) / 2L of the full forwards (5/8 with 4 layers).
    """
    R, B = choice.shape[0], len(b)
    choice, choice_dev = choice.cpu(), choice.to(model_device(model))
    L = choice.shape[1]
    patched = choice.flatten(2).ne(0).any(2)  # [R, layer]
    first = [int(row.nonzero()[0]) if bool(row.any()) else L for row in patched]
    out = []
    for s, e in _chunks(first, group, clean_outputs is not None):
        c, c_dev = choice[s:e], choice_dev[s:e]  # [G, layer, head]; the CPU copy decides
        G = c.shape[0]
        start = min(first[s:e]) if clean_outputs is not None else 0

        def patch(layer: int, z: torch.Tensor):
            if not bool(c[:, layer].any()):
                return None
            z = z.reshape(G, B, *z.shape[1:])  # [G, batch, pos, head, d_head]
            for k, src in enumerate(sources, 1):
                if bool((c[:, layer] == k).any()):
                    sel = c_dev[:, layer] == k  # [G, head]
                    z = torch.where(sel[:, None, None, :, None], src[layer][None], z)
            return z.reshape(G * B, *z.shape[2:])

        with head_hooks(sites, patch), skip_below(sites, start, clean_outputs or [], G):
            m = metric(model, b.clean.repeat(G, 1), b.mask.repeat(G, 1), b.last.repeat(G), b.answer.repeat(G),
                       b.distractor.repeat(G), sites=sites)
        out.append(m.view(G, B))
    return torch.cat(out)


def one_hot_heads(shape: tuple[int, int], source: int = 1) -> torch.Tensor:
    """One intervention per head, in (layer, head) order: [layer * head, layer, head] with `source` at that head."""
    L, H = shape
    c = torch.zeros(L * H, L, H, dtype=torch.long)
    c.view(L * H, L * H)[torch.arange(L * H), torch.arange(L * H)] = source
    return c
