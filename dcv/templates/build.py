"""Probe sets for any Hugging Face tokenizer: candidates of each template capability, filtered, split.

A candidate pair is kept when (checks in this order; a dropped pair counts under its first failing reason):

- `answer_not_single_token` / `distractor_not_single_token`: the text is not exactly one token on its own
  (`tok(text, add_special_tokens=False)`, as `dcv.probes.single_token_id` reads it; the unknown token fails too);
- `same_token`: answer and distractor are the same token;
- `length_mismatch`: clean and corrupted prompts differ in token length (as `dcv.probes.encode_prompts` encodes
  them: activations are patched position by position);
- `not_next_token`: the clean prompt followed by the answer (or the distractor) does not tokenise as the prompt's
  tokens plus that one token, so the model would never see the answer as the token after this prompt (e.g. a
  tokenizer that merges `" 17"` and `"4"` into `" 174"`);
- `duplicate`: the same (clean, corrupt) pair was already kept.

Counts cover the whole candidate list (which `seed` fixes), so they do not depend on the requested sizes. Kept
pairs are in a seeded random order; the splits take consecutive runs of it in the order `sizes` lists them, so a
split's pairs depend only on the sizes before it, and no pair is in two splits.
"""

from __future__ import annotations

import random

from dcv.probe_pair import ProbePair
from dcv.templates.base import REGISTRY

REASONS = ("answer_not_single_token", "distractor_not_single_token", "same_token", "length_mismatch",
           "not_next_token", "duplicate")


def _encode(tok, texts: list[str], special: bool) -> list[list[int]]:
    return tok(texts, add_special_tokens=special)["input_ids"] if texts else []


def filter_pairs(tok, pairs: list[ProbePair]) -> tuple[list[ProbePair], dict]:
    """The pairs this tokenizer can serve, in their order, and `{"candidates", "kept", "dropped": {reason: n}}`."""
    unk = tok.unk_token_id
    words = sorted({p.answer for p in pairs} | {p.distractor for p in pairs})
    single = {}
    for w, e in zip(words, _encode(tok, words, False)):
        single[w] = e[0] if len(e) == 1 and (unk is None or e[0] != unk) else None
    clean = _encode(tok, [p.clean for p in pairs], True)
    corrupt = _encode(tok, [p.corrupt for p in pairs], True)
    with_answer = _encode(tok, [p.clean + p.answer for p in pairs], True)
    with_distractor = _encode(tok, [p.clean + p.distractor for p in pairs], True)
    dropped = dict.fromkeys(REASONS, 0)
    kept, seen = [], set()
    for i, p in enumerate(pairs):
        a, d = single[p.answer], single[p.distractor]
        if a is None:
            reason = "answer_not_single_token"
        elif d is None:
            reason = "distractor_not_single_token"
        elif a == d:
            reason = "same_token"
        elif len(clean[i]) != len(corrupt[i]):
            reason = "length_mismatch"
        elif with_answer[i] != clean[i] + [a] or with_distractor[i] != clean[i] + [d]:
            reason = "not_next_token"
        elif (p.clean, p.corrupt) in seen:
            reason = "duplicate"
        else:
            seen.add((p.clean, p.corrupt))
            kept.append(p)
            continue
        dropped[reason] += 1
    return kept, {"candidates": len(pairs), "kept": len(kept), "dropped": dropped}


def capability_pairs(tok, name: str, seed: int) -> tuple[list[ProbePair], dict]:
    """Kept pairs of one capability in their seeded order, with the filter's counts."""
    if name not in REGISTRY:
        raise ValueError(f"unknown template capability {name!r}; known: {sorted(REGISTRY)}")
    rng = random.Random(f"dcv-templates-{seed}-{name}")
    cands = REGISTRY[name]().candidates(tok, rng)
    rng.shuffle(cands)
    return filter_pairs(tok, cands)


def build_probe_sets(tok, capabilities: list[str], sizes: dict[str, int], seed: int
                     ) -> tuple[dict[str, dict[str, list[ProbePair]]], dict[str, dict]]:
    """Per capability, disjoint splits of the requested sizes (`{"validation": 100, "probes": 64, ...}`), and per
    capability the counts `{"candidates": n, "kept": n, "dropped": {reason: n}}`.

    The same tokenizer and seed give the same pairs. A capability with fewer distinct kept pairs than the sizes add
    up to is a ValueError naming it and the numbers."""
    bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0}
    if bad:
        raise ValueError(f"sizes must be non-negative integers, got {bad}")
    need = sum(sizes.values())
    sets, counts = {}, {}
    for name in capabilities:
        kept, c = capability_pairs(tok, name, seed)
        if len(kept) < need:
            reasons = ", ".join(f"{r} {n}" for r, n in c["dropped"].items() if n)
            raise ValueError(f"template capability {name}: {len(kept)} distinct pairs survive filtering for this "
                             f"tokenizer, {need} needed ({' + '.join(f'{k} {v}' for k, v in sizes.items())}); "
                             f"{c['candidates']} candidates, dropped: {reasons or 'none'}")
        out, start = {}, 0
        for split, n in sizes.items():
            out[split] = kept[start : start + n]
            start += n
        sets[name], counts[name] = out, c
    return sets, counts
