"""Counterfactual probe pairs of the target task itself (capability `dcv.splits.TARGET`), so that the circuits of
the task being learnt can be extracted like those of the prior capabilities.

Pairs come only from the target **eval** rows (held out from training), one pair per row. A pair kind is a
registered entry of `KINDS` (a name, a builder, whether it needs the toy world); its builder turns one row into a
`dcv.probe_pair.ProbePair` (clean = the row's `prompt`, corrupt = the counterfactual prompt) or names why the row
cannot give one:

- `key_swap` (the answer-key swap): the gold option trades places with another option (a seeded choice), so the
  gold answer moves to another letter; answer = the clean gold letter, distractor = the letter the gold option
  moved to (the right answer of the corrupted prompt). Toy rows (`dcv.toy.mcq.mcq_prompt`) and SciKnowEval MCQ rows
  (the user text rebuilt with `dcv.sciknoweval.options_block`, as `dcv.sciknoweval.user_text` builds it; chat rows
  re-rendered with the chat template as `dcv.chat.chat_row` renders them), so clean and corrupt differ only in the
  two swapped options. SciKnowEval filling rows (free-text answers) have no options: dropped (`not_mcq`).
- `entity_swap` (toy only): the question's entity is replaced by another target entity whose gold food is another of
  the row's options; the options stay, so the gold letter changes. It needs the toy world (`World.target`,
  `World.food_of`): a SciKnowEval target has none, and asking for it is an error.

- `molecule_swap` (SciKnowEval MCQ rows): the question's molecule (`molecule_span`: the double-quoted SMILES, the
  quoted IUPAC name, or the reactants line of a reaction) replaced by the molecule of another eval row of the same
  task whose prompt then has the same token length (a seeded order of the candidates, the first that fits); the
  options stay. Nobody knows which option is right for the new molecule, so this is a noising counterfactual: the
  answer is the clean gold letter and the distractor another option's letter (seeded). It asks which heads carry the
  molecule to the answer, the chemistry the model reads, where key_swap asks how it reads the options. Dropped:
  `no_molecule` (no span found), `no_swap_molecule` (no other row's molecule of equal token length).

Not built: a task-type swap (SciKnowEval's MCQ subsets share one instruction, and another task's question changes
the prompt's length and its option set).

The answer token. Toy rows and plain-text rows end with "answer :" / "Answer:", and the letter comes with its
leading space, " B", as in the other probe sets. A chat row's prompt ends with the chat template's generation prompt
(Qwen: "<|im_start|>assistant\\n"; with `enable_thinking: false` the empty "<think>\\n\\n</think>\\n\\n" block):
the assistant turn's content starts right there, so the first token the model emits is the letter without a space,
"B", which is also what SFT trains on (`dcv.arms.data.sft_records`: the gold completion without the toy's leading
space) and what GRPO samples first. So `answer_prefix` is "" for chat rows and " " otherwise; the filter below then
checks, per pair, that this exact text is one token that follows the prompt's own tokens.

Pairs are kept when answer and distractor are single tokens that differ, clean and corrupted prompts have equal
token length, and the answer is the token after the prompt (`dcv.templates.build.filter_pairs`, whose reasons
count the drops after the builders' own: `not_mcq`, `not_rebuilt`, `no_swap_entity`, `no_molecule`,
`no_swap_molecule`). Kinds are assigned round robin
over the eval rows in a seeded order (`seed`: the world seed); the kept pairs, in that order, give the scoring
split first and the discovery split next, so the two never share a row.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from dcv.answers import LETTERS
from dcv.probe_pair import ProbePair

# Why a builder gives no pair for a row (before the token filter's reasons, `dcv.templates.build.REASONS`).
BUILD_REASONS = ("not_mcq", "not_rebuilt", "no_swap_entity", "no_molecule", "no_swap_molecule")


@dataclass(frozen=True)
class PairContext:
    """What a builder may read besides the row: the tokenizer (chat rows are re-rendered with its template) and the
    toy world (None for a target that is not the toy world's)."""

    tok: object
    world: object | None = None
    rows: tuple = ()  # every eval row (molecule_swap takes its replacement molecules from the other rows)


@dataclass(frozen=True)
class PairKind:
    name: str
    build: Callable[[dict, random.Random, PairContext], "ProbePair | str"]  # a pair, or the reason there is none
    needs_world: bool
    description: str


KINDS: dict[str, PairKind] = {}


def register(kind: PairKind) -> PairKind:
    if kind.name in KINDS:
        raise ValueError(f"pair kind {kind.name!r} registered twice")
    KINDS[kind.name] = kind
    return kind


class TooFewPairs(ValueError):
    """Fewer kept pairs than the splits ask; `split` names the first split that cannot be filled."""

    def __init__(self, message: str, split: str, have: int, need: int):
        super().__init__(message)
        self.split, self.have, self.need = split, have, need


def is_chat(row: dict) -> bool:
    return row.get("message") is not None


def answer_prefix(row: dict) -> str:
    """What goes before the letter of the answer token: nothing after a chat template's generation prompt (the
    assistant's content starts there, "B"), a space after a plain-text prompt (" B"). See the module doc."""
    return "" if is_chat(row) else " "


def _labels(row: dict) -> list[str]:
    return list(row.get("labels") or LETTERS[: len(row["choices"])])


# ------------------------------------------------------------------ rebuilding a row's prompt with other content


def _toy_question(text: str, choices: list[str]) -> str | None:
    """The question of a toy MCQ text (`mcq_prompt(question, choices)`), None when the text is not one."""
    from dcv.toy.mcq import mcq_prompt

    head, tail = "question : ", mcq_prompt("", choices)[len("question : ") :]
    if not (text.startswith(head) and text.endswith(tail)):
        return None
    q = text[len(head) : len(text) - len(tail)]
    return q if mcq_prompt(q, choices) == text else None


def _user_text(row: dict) -> tuple[str, str]:
    """The row's text before rendering, and what follows it in `prompt` (plain SciKnowEval rows: "\\nAnswer:")."""
    from dcv.sciknoweval import ANSWER_SUFFIX

    if is_chat(row):
        return row["message"], ""
    if row.get("labels") is not None and row["prompt"].endswith(ANSWER_SUFFIX):
        return row["prompt"][: -len(ANSWER_SUFFIX)], ANSWER_SUFFIX
    return row["prompt"], ""


def _with_text(row: dict, text: str, suffix: str, ctx: PairContext) -> str:
    """The prompt of `row` with its user text replaced: chat rows rendered as `dcv.chat.chat_row` renders them (the
    row's own system message and template kwargs), plain rows with their suffix."""
    if not is_chat(row):
        return text + suffix
    from dcv.chat import render_prompt

    return render_prompt(ctx.tok, text, True, row.get("system"), row.get("template_kwargs"), "data.target_pairs")


def rebuild(row: dict, choices: list[str], question: str | None, ctx: PairContext) -> str | None:
    """The row's prompt with these options (and, for toy rows, this question), built the way the row's own was;
    None when the row's prompt is not what this rebuild gives for its own options and question (so a corruption
    could differ from the clean prompt in more than what it changes)."""
    text, suffix = _user_text(row)
    old = list(row["choices"])
    if row.get("labels") is None:  # a toy row: mcq_prompt(question, options)
        from dcv.toy.mcq import mcq_prompt

        q = _toy_question(text, old)
        if q is None or _with_text(row, mcq_prompt(q, old), suffix, ctx) != row["prompt"]:
            return None
        return _with_text(row, mcq_prompt(question if question is not None else q, choices), suffix, ctx)
    from dcv.sciknoweval import options_block

    labels = row["labels"]
    block = options_block(old, labels).rstrip()  # user_text strips the whole text, the last option's end with it
    if question is not None or not text.endswith(block):
        return None
    head = text[: len(text) - len(block)]
    if _with_text(row, (head + options_block(old, labels)).strip(), suffix, ctx) != row["prompt"]:
        return None
    return _with_text(row, (head + options_block(choices, labels)).strip(), suffix, ctx)


# ------------------------------------------------------------------------------------------------- the kinds


def _gold_and_other(row: dict) -> tuple[list[str], int, list[int]] | None:
    """(labels, index of the gold option, indices of the others) of an MCQ row judged by its letter; None else."""
    if not row.get("choices") or row.get("answer_rule", "letter") != "letter":
        return None
    labels = _labels(row)
    if row["answer"] not in labels:
        return None
    g = labels.index(row["answer"])
    return labels, g, [i for i in range(len(labels)) if i != g]


def key_swap(row: dict, rng: random.Random, ctx: PairContext) -> ProbePair | str:
    """The gold option swapped with another (seeded) option: the gold letter moves (see the module doc)."""
    mcq = _gold_and_other(row)
    if mcq is None:
        return "not_mcq"
    labels, g, others = mcq
    j = rng.choice(others)
    swapped = list(row["choices"])
    swapped[g], swapped[j] = swapped[j], swapped[g]
    corrupt = rebuild(row, swapped, None, ctx)
    if corrupt is None:
        return "not_rebuilt"
    pre = answer_prefix(row)
    return ProbePair(row["prompt"], corrupt, pre + labels[g], pre + labels[j])


def entity_swap(row: dict, rng: random.Random, ctx: PairContext) -> ProbePair | str:
    """Toy rows: the entity replaced by another target entity whose gold food is another of the options."""
    from dcv.toy.capabilities.mcqa import EAT_Q

    world = ctx.world
    if world is None:
        raise ValueError("entity_swap needs the toy world (a toy target); this target has none")
    if not row.get("choices") or row.get("labels") is not None:
        return "not_mcq"
    text, _ = _user_text(row)
    q = _toy_question(text, list(row["choices"]))
    m = re.fullmatch(EAT_Q.format(e="(\\S+)"), q or "")
    e = m.group(1) if m else None
    if e not in world.food_of or world.food_of[e] not in row["choices"] or row["answer"] not in LETTERS:
        return "not_rebuilt"
    g = LETTERS.index(row["answer"])
    others = [x for x in world.target if x != e and world.food_of[x] in row["choices"] and world.food_of[x] != world.food_of[e]]
    if not others:
        return "no_swap_entity"
    e2 = rng.choice(others)
    corrupt = rebuild(row, list(row["choices"]), EAT_Q.format(e=e2), ctx)
    if corrupt is None:
        return "not_rebuilt"
    pre = answer_prefix(row)
    return ProbePair(row["prompt"], corrupt, pre + LETTERS[g], pre + LETTERS[row["choices"].index(world.food_of[e2])])


# The molecule of a SciKnowEval question: a double-quoted SMILES (no blanks: the instruction's quoted letters and
# "or" never match), a quoted IUPAC name (greedy to the last quote on its line: names hold primes), a quoted
# "SMILES representation", or a line without blanks after a line ending in a colon (the reactants of reaction rows).
# The first pattern that matches wins.
MOLECULE = (re.compile(r'"([^"\s]{3,})"'), re.compile(r"IUPAC name '([^\n]+)'"),
            re.compile(r"SMILES representation '([^'\s]+)'"), re.compile(r":\n(\S+)\n"))


def molecule_span(question: str) -> tuple[int, int] | None:
    """(start, end) of the molecule in a SciKnowEval question (`MOLECULE`), None when it names none."""
    for pat in MOLECULE:
        m = pat.search(question)
        if m:
            return m.span(1)
    return None


def _question_parts(row: dict) -> tuple[str, str, str] | None:
    """(text before the molecule, the molecule, text after it) of the row's user text, None without a molecule."""
    text, _ = _user_text(row)
    span = molecule_span(text)
    if span is None:
        return None
    a, b = span
    return text[:a], text[a:b], text[b:]


def molecule_swap(row: dict, rng: random.Random, ctx: PairContext) -> ProbePair | str:
    """SciKnowEval MCQ rows: the molecule replaced by another eval row's (same task, equal token length); options
    kept; answer = the gold letter, distractor = another option's letter (see the module doc)."""
    mcq = _gold_and_other(row)
    if mcq is None:
        return "not_mcq"
    parts = _question_parts(row) if row.get("labels") is not None else None  # toy rows name no molecule
    if parts is None:
        return "no_molecule"
    head, mol, tail = parts
    text, suffix = _user_text(row)
    if _with_text(row, head + mol + tail, suffix, ctx) != row["prompt"]:
        return "not_rebuilt"
    others = sorted({p[1] for r in ctx.rows if r is not row and r.get("task") == row.get("task")
                     for p in [_question_parts(r)] if p is not None and p[1] != mol})
    rng.shuffle(others)
    n = len(ctx.tok(row["prompt"], add_special_tokens=True)["input_ids"])
    for other in others:
        corrupt = _with_text(row, head + other + tail, suffix, ctx)
        if len(ctx.tok(corrupt, add_special_tokens=True)["input_ids"]) == n:
            break
    else:
        return "no_swap_molecule"
    labels, g, rest = mcq
    j = rng.choice(rest)
    pre = answer_prefix(row)
    return ProbePair(row["prompt"], corrupt, pre + labels[g], pre + labels[j])


register(PairKind("key_swap", key_swap, needs_world=False,
                  description="the gold option swapped with another option: the gold letter moves"))
register(PairKind("entity_swap", entity_swap, needs_world=True,
                  description="toy: the entity replaced by one whose gold food is another option (options kept)"))
register(PairKind("molecule_swap", molecule_swap, needs_world=False,
                  description="SciKnowEval: the question's molecule replaced by another eval row's of equal token "
                              "length (options kept; a noising counterfactual)"))


# ------------------------------------------------------------------------------------------------- the splits


def check_kinds(kinds: list[str], world) -> None:
    """Registered, distinct kinds, and the toy world for the kinds that need it (ValueError naming the kind)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or len(set(kinds)) != len(kinds):
        raise ValueError(f"unknown or repeated pair kind {bad or kinds}; registered: {', '.join(KINDS)}")
    needs = [k for k in kinds if KINDS[k].needs_world]
    if needs and world is None:
        rest = [k for k in kinds if not KINDS[k].needs_world] or ["key_swap"]
        raise ValueError(f"{', '.join(needs)} needs the toy world (data.target.source toy), which this target does "
                         f"not have: ask for [{', '.join(rest)}]")


def build_target_pairs(tok, rows: list[dict], kinds: list[str], sizes: dict[str, int], seed: int, world=None
                       ) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Disjoint splits of target pairs (`sizes`: split -> pairs, drawn in that order) from the eval `rows`, and per
    kind `{"candidates", "kept", "dropped": {reason: n}}` (candidates: the rows the kind was assigned). A pair's
    record is the ProbePair's with `kind` and `eval_row` (the index of its row in `rows`). No kinds: no pairs.

    ValueError for a kind that is unknown or needs a world it lacks; TooFewPairs (naming the split) when the kept
    pairs cannot fill the splits."""
    from dcv.templates.build import REASONS, filter_pairs

    check_kinds(kinds, world)
    if not kinds:
        return {s: [] for s in sizes}, {}
    ctx = PairContext(tok, world, tuple(rows))
    order = list(range(len(rows)))
    random.Random(f"target-pairs-{seed}").shuffle(order)
    built: dict[str, list[tuple[int, int, ProbePair]]] = {k: [] for k in kinds}
    counts = {k: {"candidates": 0, "kept": 0, "dropped": dict.fromkeys(BUILD_REASONS + REASONS, 0)} for k in kinds}
    for pos, i in enumerate(order):
        kind = kinds[pos % len(kinds)]
        counts[kind]["candidates"] += 1
        got = KINDS[kind].build(rows[i], random.Random(f"target-pairs-{seed}-{kind}-{i}"), ctx)
        if isinstance(got, str):
            counts[kind]["dropped"][got] += 1
        else:
            built[kind].append((pos, i, got))
    kept: list[tuple[int, int, str, ProbePair]] = []
    for kind, items in built.items():
        survivors, c = filter_pairs(tok, [p for _, _, p in items])
        ids = {id(p) for p in survivors}
        kept += [(pos, i, kind, p) for pos, i, p in items if id(p) in ids]
        counts[kind]["kept"] = c["kept"]
        for r, n in c["dropped"].items():
            counts[kind]["dropped"][r] += n
    kept.sort()
    out, start = {}, 0
    for split, n in sizes.items():
        if start + n > len(kept):
            dropped = {r: sum(c["dropped"][r] for c in counts.values()) for r in BUILD_REASONS + REASONS}
            why = ", ".join(f"{r} {n}" for r, n in dropped.items() if n) or "none"
            raise TooFewPairs(f"{len(kept)} target pairs are kept from {len(rows)} target eval rows (kinds "
                              f"{', '.join(kinds)}; dropped: {why}), {' + '.join(str(v) for v in sizes.values())} "
                              f"needed ({' + '.join(sizes)}, one pair per row)", split, len(kept), start + n)
        out[split] = [{**p.to_json(), "kind": kind, "eval_row": i} for _, i, kind, p in kept[start : start + n]]
        start += n
    return out, counts
