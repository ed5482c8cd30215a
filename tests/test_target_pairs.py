"""The target task's own probe pairs (`dcv.target_pairs`, capability `target`): each kind on toy rows, key_swap and
molecule_swap on real SciKnowEval chat rows with the real Qwen tokenizer of ../shared (skipped when absent), the errors, and what
prepare-data writes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dcv.answers import LETTERS
from dcv.target_pairs import KINDS, PairContext, build_target_pairs, entity_swap, key_swap
from dcv.toy.capabilities.mcqa import EAT_Q
from dcv.toy.mcq import mcq_prompt
from dcv.toy.target import make_rows
from dcv.toy.world import World, WorldConfig
from stages.cli import app
from tests.conftest import REPO, write_params

SHARED = REPO.parent / "shared" / "data"
QWEN, SCIKNOWEVAL = SHARED / "qwen-tokenizer", SHARED / "sciknoweval-chem-l3"
MCQ_SUBSETS = ["molar_weight_calculation", "molecular_property_calculation", "molecule_structure_prediction",
               "reaction_prediction", "retrosynthesis"]


@pytest.fixture(scope="module")
def toy():
    from dcv.toy.corpus import capabilities
    from dcv.toy.tokenizer import build_tokenizer

    world = World.build(WorldConfig())
    words: set[str] = set()
    for cap in capabilities(world).values():
        words |= cap.words()
    return world, build_tokenizer(words), make_rows(world, 100, 60)[1]


@pytest.fixture(scope="module")
def qwen():
    if not QWEN.is_dir():
        pytest.skip("../shared/data/qwen-tokenizer not present")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN))


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


def test_kinds_are_registered_entries():
    assert list(KINDS) == ["key_swap", "entity_swap", "molecule_swap"]
    assert not KINDS["key_swap"].needs_world and KINDS["entity_swap"].needs_world
    assert not KINDS["molecule_swap"].needs_world


def test_key_swap_on_toy_rows_moves_the_gold_option_only(toy):
    world, tok, rows = toy
    for i, row in enumerate(rows):
        p = key_swap(row, random.Random(i), PairContext(tok, world))
        g, j = LETTERS.index(p.answer.strip()), LETTERS.index(p.distractor.strip())
        assert p.clean == row["prompt"] and p.answer == " " + row["answer"] and g != j
        swapped = list(row["choices"])
        swapped[g], swapped[j] = swapped[j], swapped[g]
        entity = next(e for e in world.known if row["prompt"] == mcq_prompt(EAT_Q.format(e=e), row["choices"]))
        assert p.corrupt == mcq_prompt(EAT_Q.format(e=entity), swapped)  # the two options, nothing else
        assert swapped[j] == world.food_of[entity]  # the gold food now sits at the distractor's letter
        assert len(_ids(tok, p.clean)) == len(_ids(tok, p.corrupt))


def test_entity_swap_on_toy_rows_changes_the_entity_only(toy):
    world, tok, rows = toy
    for i, row in enumerate(rows):
        p = entity_swap(row, random.Random(i), PairContext(tok, world))
        a, b = p.clean.split(), p.corrupt.split()
        diff = [k for k in range(len(a)) if a[k] != b[k]]
        assert len(a) == len(b) and len(diff) == 1, (p.clean, p.corrupt)  # one word: the entity
        e, e2 = a[diff[0]], b[diff[0]]
        assert e in world.known and e2 in world.known and e != e2
        assert p.answer == " " + row["answer"] and row["choices"][LETTERS.index(row["answer"])] == world.food_of[e]
        assert row["choices"][LETTERS.index(p.distractor.strip())] == world.food_of[e2] != world.food_of[e]
        assert len(_ids(tok, p.clean)) == len(_ids(tok, p.corrupt))


def test_splits_are_round_robin_disjoint_seeded_and_counted(toy):
    world, tok, rows = toy
    sizes = {"probes": 20, "discovery": 20}
    out, counts = build_target_pairs(tok, rows, ["key_swap", "entity_swap"], sizes, 0, world)
    assert [len(out[s]) for s in sizes] == [20, 20]
    used = [r["eval_row"] for s in sizes for r in out[s]]
    assert len(set(used)) == len(used)  # one pair per row: the splits share no row
    assert {r["kind"] for r in out["probes"]} == {"key_swap", "entity_swap"}
    for kind, c in counts.items():
        assert c["candidates"] == len(rows) // 2 and c["kept"] + sum(c["dropped"].values()) == c["candidates"]
    again, _ = build_target_pairs(tok, rows, ["key_swap", "entity_swap"], sizes, 0, world)
    other, _ = build_target_pairs(tok, rows, ["key_swap", "entity_swap"], sizes, 1, world)
    assert again == out and other != out
    assert build_target_pairs(tok, rows, [], sizes, 0, world) == ({"probes": [], "discovery": []}, {})


def test_entity_swap_without_a_world_and_too_few_rows_are_errors(toy):
    from dcv.target_pairs import TooFewPairs

    world, tok, rows = toy
    with pytest.raises(ValueError, match="entity_swap needs the toy world"):
        build_target_pairs(tok, rows, ["key_swap", "entity_swap"], {"probes": 4}, 0, None)
    with pytest.raises(TooFewPairs, match="60 target pairs are kept from 60 target eval rows") as e:
        build_target_pairs(tok, rows, ["key_swap"], {"probes": 40, "discovery": 40}, 0, world)
    assert e.value.split == "discovery"


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_line_error(r, *needles: str) -> str:
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.mark.parametrize("sizes,key,numbers", [
    ({"n_pairs": 20, "n_discovery": 4}, "data.target_pairs.n_pairs", "16 target pairs are kept from 16 target eval rows"),
    ({"n_pairs": 10, "n_discovery": 10}, "data.target_pairs.n_discovery", "10 + 10 needed"),
])
def test_too_few_target_rows_is_one_line_naming_the_key(workdir: Path, sizes, key, numbers):
    write_params(workdir / "params.yaml", {"data": {"target_pairs": sizes}})
    for command in (["stage", "prepare-data"], ["check"]):
        _one_line_error(_invoke(*command), f"params.yaml: {key}: ", numbers)
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]


def test_target_is_no_prior_capability(workdir: Path):
    write_params(workdir / "params.yaml", {"data": {"capabilities": ["ioi", "target"]}})
    _one_line_error(_invoke("stage", "prepare-data"), "params.yaml: data.capabilities: ", "data.target_pairs")
    write_params(workdir / "params.yaml", {"data": {"target_pairs": {"kinds": ["task_swap"]}}})
    _one_line_error(_invoke("stage", "prepare-data"), "params.yaml: data.target_pairs.kinds: ", "task_swap")


def test_prepare_data_writes_target_pairs_into_probes_and_discovery_only(workdir: Path):
    r = _invoke("stage", "prepare-data")
    assert r.exit_code == 0, r.output
    prepared = workdir / "data/prepared"
    have = {d.name for d in prepared.iterdir() if (d / "target.jsonl").is_file()}
    assert have == {"probes", "discovery"}
    rows = {s: [json.loads(l) for l in (prepared / s / "target.jsonl").read_text().splitlines()] for s in have}
    assert [len(rows["probes"]), len(rows["discovery"])] == [4, 4]
    assert not {r["eval_row"] for r in rows["probes"]} & {r["eval_row"] for r in rows["discovery"]}
    eval_ = [json.loads(l) for l in (prepared / "target/eval.jsonl").read_text().splitlines()]
    for r in rows["probes"] + rows["discovery"]:
        assert r["clean"] == eval_[r["eval_row"]]["prompt"] and r["answer"] == " " + eval_[r["eval_row"]]["answer"]
    m = json.loads((workdir / "metrics/prepare-data.json").read_text())
    t = m["target_pairs"]
    assert t["kinds"] == ["key_swap", "entity_swap"] and t["pairs"] == {"probes": 4, "discovery": 4}
    assert sum(c["candidates"] for c in t["kept"].values()) == 16 and "target" not in m["pairs"]["probes"]

    write_params(workdir / "params.yaml", {"data": {"target_pairs": {"kinds": []}}})
    r = _invoke("stage", "prepare-data")  # the study's masks are fitted on `target` by default: no pairs, no masks
    assert r.exit_code == 2 and "circuits.study_capabilities: target is no probe set of prepare-data" in r.output
    write_params(workdir / "params.yaml", {"data": {"target_pairs": {"kinds": []}}, "circuits": {"study_capabilities": []}})
    assert _invoke("stage", "prepare-data").exit_code == 0
    assert not list(prepared.glob("*/target.jsonl"))
    assert json.loads((workdir / "metrics/prepare-data.json").read_text())["target_pairs"]["pairs"] == {
        "probes": 0, "discovery": 0}


# ------------------------------------------------------------------ real SciKnowEval rows, the real Qwen tokenizer


@pytest.fixture(scope="module")
def chat_rows(qwen):
    if not SCIKNOWEVAL.is_dir():
        pytest.skip("../shared/data/sciknoweval-chem-l3 not present")
    from dcv.chat import chat_row
    from dcv.sciknoweval import load_split

    _, eval_ = load_split(SCIKNOWEVAL, None, 300, seed=0, chat=True)
    return [chat_row(qwen, r) for r in eval_]


def test_key_swap_on_sciknoweval_chat_rows_with_the_qwen_tokenizer(qwen, chat_rows):
    from dcv.sciknoweval import options_block

    out, counts = build_target_pairs(qwen, chat_rows, ["key_swap"], {"probes": 64, "discovery": 64}, 0)
    c = counts["key_swap"]
    assert c["dropped"]["not_mcq"] == sum(r["answer_rule"] != "letter" for r in chat_rows)  # filling rows
    kept = out["probes"] + out["discovery"]
    assert {chat_rows[r["eval_row"]]["subset"] for r in kept} == set(MCQ_SUBSETS)  # pairs from every MCQ subset
    for p in kept:
        row = chat_rows[p["eval_row"]]
        g, j = row["labels"].index(p["answer"]), row["labels"].index(p["distractor"])
        assert p["answer"] == row["answer"] and g != j  # the letter right after the generation prompt: no space
        swapped = list(row["choices"])
        swapped[g], swapped[j] = swapped[j], swapped[g]
        message = row["message"].replace(options_block(row["choices"], row["labels"]),
                                         options_block(swapped, row["labels"]))
        assert p["corrupt"] == qwen.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                                        add_generation_prompt=True, enable_thinking=False)
        clean = _ids(qwen, p["clean"])
        assert len(clean) == len(_ids(qwen, p["corrupt"]))
        a, d = (qwen(x, add_special_tokens=False)["input_ids"] for x in (p["answer"], p["distractor"]))
        assert len(a) == len(d) == 1 and _ids(qwen, p["clean"] + p["answer"]) == clean + a


@pytest.mark.parametrize("question, molecule", [
    ('the product "O=C(O)/C=C1\\CN(C)CCC1S" ?', "O=C(O)/C=C1\\CN(C)CCC1S"),
    ("the molecule with the the IUPAC name '1,1'-biphenyl-4-ol'?", "1,1'-biphenyl-4-ol"),
    ("the molecule with the canonical SMILES representation 'C(CO)NCCO'?", "C(CO)NCCO"),
    ('reagents (in SMILES format) which are separated by ".":\nCCO.CC(=O)Cl\nWhich of', "CCO.CC(=O)Cl"),
    ('Your answer should be "A", "B", "C" or "D".\nWhat is the solubility of the molecule "C=CC=C"?', "C=CC=C"),
    ("Here is a unbalanced chemical equation:\nNH4 + NO2 = H2O + N\nThe balanced", None),
])
def test_molecule_span_finds_the_question_s_molecule(question: str, molecule: str | None):
    from dcv.target_pairs import molecule_span

    span = molecule_span(question)
    assert (question[span[0]:span[1]] if span else None) == molecule


def test_molecule_swap_on_sciknoweval_chat_rows_replaces_the_molecule_only(qwen, chat_rows):
    """Each kept pair: the clean prompt with its molecule replaced by the molecule of another eval row of the same
    task, options kept, equal token lengths; answer the gold letter, distractor another option's letter."""
    from dcv.target_pairs import _question_parts, molecule_swap

    out, counts = build_target_pairs(qwen, chat_rows, ["molecule_swap"], {"probes": 32, "discovery": 16}, 0)
    c = counts["molecule_swap"]
    assert c["dropped"]["not_mcq"] == sum(r["answer_rule"] != "letter" for r in chat_rows)
    assert c["dropped"]["no_molecule"] == 0 and c["kept"] >= 48  # every MCQ subset names its molecule
    for p in out["probes"] + out["discovery"]:
        row = chat_rows[p["eval_row"]]
        head, mol, tail = _question_parts(row)
        others = {_question_parts(r)[1]: r for r in chat_rows
                  if r is not row and r.get("choices") and r["task"] == row["task"]}
        new = next(m for m in others if p["corrupt"] == p["clean"].replace(head + mol + tail, head + m + tail))
        assert new != mol and others[new]["task"] == row["task"]
        assert len(_ids(qwen, p["clean"])) == len(_ids(qwen, p["corrupt"]))
        assert p["answer"] == row["answer"] and p["distractor"] in row["labels"] and p["distractor"] != p["answer"]
    toy_row = {"prompt": mcq_prompt("what does x eat ?", ["a", "b", "c", "d"]), "answer": "A",
               "choices": ["a", "b", "c", "d"]}
    assert molecule_swap(toy_row, random.Random(0), PairContext(qwen, None, (toy_row,))) == "no_molecule"
    mcq = next(r for r in chat_rows if r.get("choices") and _question_parts(r))
    assert molecule_swap(mcq, random.Random(0), PairContext(qwen, None, (mcq,))) == "no_swap_molecule"  # no other row


def test_entity_swap_on_a_sciknoweval_target_is_one_line_naming_kinds(qwen, workdir: Path):
    if not SCIKNOWEVAL.is_dir():
        pytest.skip("../shared/data/sciknoweval-chem-l3 not present")
    write_params(workdir / "params.yaml", {"data": {
        "tokenizer": str(QWEN), "capabilities": ["mcqa"], "probes": {"source": "templates"},
        "target": {"source": "sciknoweval", "path": str(SCIKNOWEVAL), "subsets": ["retrosynthesis"], "n_eval": 8,
                   "chat": True}, "target_pairs": {"kinds": ["key_swap", "entity_swap"]}}})
    _one_line_error(_invoke("stage", "prepare-data"), "params.yaml: data.target_pairs.kinds: entity_swap needs the "
                    "toy world")
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]
