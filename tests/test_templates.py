"""Template probe sets for real tokenizers: the real Qwen tokenizer of ../shared (skipped when absent) and a
character-level tokenizer built here, which splits every word."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcv.circuits.pairs import pair_batches
from dcv.probes import single_token_id
from dcv.templates import REASONS, REGISTRY, build_probe_sets, capability_pairs

QWEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qwen-tokenizer"
SIZES = {"validation": 100, "probes": 64, "protection": 64}
CAPS = ["ioi", "greater_than", "capitals", "induction", "arithmetic", "mcqa"]


@pytest.fixture(scope="module")
def qwen():
    if not QWEN.is_dir():
        pytest.skip("../shared/data/qwen-tokenizer not present")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN))


@pytest.fixture(scope="module")
def built(qwen):
    return build_probe_sets(qwen, CAPS, SIZES, seed=0)


def test_registry_lists_every_capability():
    assert set(CAPS) <= set(REGISTRY)


def _rows(pairs):
    return [p.to_json() for p in pairs]


def test_kept_pairs_satisfy_the_invariants(qwen, built):
    sets, _ = built
    for cap, splits in sets.items():
        assert {k: len(v) for k, v in splits.items()} == SIZES, cap
        rows = [r for pairs in splits.values() for r in _rows(pairs)]
        # the pipeline's own readers accept every pair: equal lengths, single-token answer and distractor
        batches = pair_batches(qwen, rows, batch_size=64, where=cap)
        assert sum(len(b) for b in batches) == len(rows)
        for i, r in enumerate(rows):
            a = single_token_id(qwen, r["answer"], f"{cap}:{i}")
            d = single_token_id(qwen, r["distractor"], f"{cap}:{i}")
            assert a != d and r["clean"] != r["corrupt"], (cap, r)
            clean = qwen(r["clean"])["input_ids"]
            assert qwen(r["clean"] + r["answer"])["input_ids"] == clean + [a], (cap, r)
            assert qwen(r["clean"] + r["distractor"])["input_ids"] == clean + [d], (cap, r)


def test_semantics_of_each_capability(built):
    sets, _ = built
    for p in sets["greater_than"]["probes"]:
        start = p.clean.split("from the year ")[1][:4]
        century = p.clean.rsplit(" ", 1)[1]
        assert start[:2] == century and start[3] == "9" and int(p.answer) == int(start[2]) + 1
        assert int(p.distractor) == int(start[2]) and p.corrupt.split("from the year ")[1][:4] == century + "01"
        # the answer's decade is later than the start year, the distractor's is not (clean); both are (corrupt)
        assert int(century + p.answer + "0") > int(start) >= int(century + p.distractor + "9")
        assert int(century + p.distractor + "0") > int(century + "01")
    for p in sets["arithmetic"]["probes"]:
        a, op, b = p.clean.replace("Question: ", "").split(" =")[0].split()
        assert int(p.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    for p in sets["ioi"]["probes"]:
        assert p.clean.count(p.distractor) == 2 and p.clean.count(p.answer) == 1
        assert p.corrupt.count(p.distractor) == 1 and p.corrupt.count(p.answer) == 1
    for p in sets["induction"]["probes"]:
        assert p.clean.count(p.answer) == 1 and p.corrupt.count(p.distractor) == 1 and p.answer not in p.corrupt
    for p in sets["mcqa"]["probes"]:
        gold = p.answer.strip()
        line = {ln[0]: ln[3:] for ln in p.clean.splitlines()[1:5]}
        moved = {ln[0]: ln[3:] for ln in p.corrupt.splitlines()[1:5]}
        assert moved[p.distractor.strip()] == line[gold] and moved[gold] == line[p.distractor.strip()]


def test_counts_add_up_and_do_not_depend_on_sizes(qwen, built):
    sets, counts = built
    for cap, c in counts.items():
        assert set(c["dropped"]) == set(REASONS)
        assert c["candidates"] == c["kept"] + sum(c["dropped"].values()), cap
    _, small = build_probe_sets(qwen, ["capitals"], {"probes": 8}, seed=0)
    assert small["capitals"] == counts["capitals"]
    assert counts["capitals"]["dropped"]["answer_not_single_token"] > 0  # " Buenos Aires" and co.


def test_splits_are_disjoint_deterministic_and_prefix_stable(qwen, built):
    sets, _ = built
    for cap, splits in sets.items():
        ids = [(p.clean, p.corrupt) for pairs in splits.values() for p in pairs]
        assert len(ids) == len(set(ids)), cap
    again, _ = build_probe_sets(qwen, ["ioi", "greater_than"], SIZES, seed=0)
    assert again == {k: sets[k] for k in ("ioi", "greater_than")}
    # growing a later split (or dropping it) leaves the earlier ones as they were
    grown, _ = build_probe_sets(qwen, ["ioi"], {"validation": 100, "probes": 200}, seed=0)
    assert grown["ioi"]["validation"] == sets["ioi"]["validation"]
    assert grown["ioi"]["probes"][:64] == sets["ioi"]["probes"]
    other, _ = build_probe_sets(qwen, ["ioi"], SIZES, seed=1)
    assert other["ioi"]["probes"] != sets["ioi"]["probes"]


def test_table_of_kept_and_dropped(qwen):
    """The filter's counts with the Qwen tokenizer, 64 pairs per capability (`pytest -s` prints the table)."""
    _, counts = build_probe_sets(qwen, CAPS, {"probes": 64}, seed=0)
    print(f"\n{'capability':<14}{'candidates':>11}{'kept':>7}  dropped")
    for cap, c in counts.items():
        drops = ", ".join(f"{r} {n}" for r, n in c["dropped"].items() if n) or "-"
        print(f"{cap:<14}{c['candidates']:>11}{c['kept']:>7}  {drops}")
        assert c["kept"] >= 64


def test_too_few_pairs_is_a_value_error_with_the_numbers(qwen):
    _, counts = build_probe_sets(qwen, ["greater_than"], {"probes": 1}, seed=0)
    n = counts["greater_than"]["kept"]
    with pytest.raises(ValueError, match=rf"greater_than: {n} distinct pairs .* {n + 1} needed \(a {n} \+ b 1\)"):
        build_probe_sets(qwen, ["greater_than"], {"a": n, "b": 1}, seed=0)
    with pytest.raises(ValueError, match="unknown template capability 'nope'"):
        build_probe_sets(qwen, ["nope"], {"probes": 1}, seed=0)
    with pytest.raises(ValueError, match="non-negative integers"):
        build_probe_sets(qwen, ["ioi"], {"probes": -1}, seed=0)


@pytest.fixture(scope="module")
def chars():
    """A character-level tokenizer: one token per character, so no word is a single token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {"[UNK]": 0, "[PAD]": 1, **{c: i + 2 for i, c in enumerate(alphabet)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    t.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]")


def test_character_level_tokenizer(chars):
    assert chars("The capital")["input_ids"] == [chars.convert_tokens_to_ids(c) for c in "The capital"]
    for cap, why in [("capitals", "answer_not_single_token"), ("ioi", "answer_not_single_token"),
                     ("induction", "0 candidates")]:
        with pytest.raises(ValueError, match=rf"template capability {cap}: 0 distinct pairs .* 8 needed .*{why}"):
            build_probe_sets(chars, [cap], {"probes": 8}, seed=0)
    # digits and letters are single characters: these still work, the space moving into the prompt
    sets, _ = build_probe_sets(chars, ["greater_than", "arithmetic", "mcqa"], {"probes": 8}, seed=0)
    for cap in ("arithmetic", "mcqa"):
        assert all(p.clean.endswith(" ") and len(p.answer) == 1 for p in sets[cap]["probes"]), cap
    rows = [p.to_json() for pairs in sets.values() for p in pairs["probes"]]
    assert sum(len(b) for b in pair_batches(chars, rows, batch_size=8)) == len(rows)


def test_capability_pairs_orders_the_same_candidates_by_seed(qwen):
    a, ca = capability_pairs(qwen, "arithmetic", 0)
    b, cb = capability_pairs(qwen, "arithmetic", 3)
    assert ca == cb and sorted(map(repr, a)) == sorted(map(repr, b)) and a != b


def test_prepare_data_builds_template_probes_for_the_qwen_tokenizer(qwen, workdir: Path):
    """`data.probes.source: templates` with the real tokenizer: every split of every capability written, disjoint,
    single-token answers, and the kept / dropped counts per capability in metrics/prepare-data.json; with
    `data.target.chat` the target rows carry the user turn and its chat rendering."""
    import json

    from typer.testing import CliRunner

    from stages.cli import app
    from tests.conftest import write_params

    sciknoweval = QWEN.parent / "sciknoweval-chem-l3"
    if not sciknoweval.is_dir():
        pytest.skip("../shared/data/sciknoweval-chem-l3 not present")
    write_params(workdir / "params.yaml", {"data": {
        "tokenizer": str(QWEN), "capabilities": CAPS, "probes": {"source": "templates"},
        "target": {"source": "sciknoweval", "path": str(sciknoweval), "subsets": ["molecular_property_calculation"],
                   "n_eval": 8, "chat": True}, "target_pairs": {"kinds": ["key_swap"]}}})
    r = CliRunner().invoke(app, ["stage", "prepare-data"])
    assert r.exit_code == 0, r.output
    m = json.loads((workdir / "metrics/prepare-data.json").read_text())
    assert m["probe_source"] == "templates" and sorted(m["kept"]) == sorted(CAPS)
    for cap in CAPS:
        k = m["kept"][cap]
        assert k["kept"] + sum(k["dropped"].values()) == k["candidates"] and k["kept"] >= 12 + 4 * 8
        rows = {split: [json.loads(l) for l in (workdir / "data/prepared" / split / f"{cap}.jsonl").read_text().splitlines()]
                for split in ("validation", "probes", "protection", "discovery", "forgetting")}
        assert [len(v) for v in rows.values()] == [12, 8, 8, 8, 8]
        keys = [(x["clean"], x["corrupt"]) for v in rows.values() for x in v]
        assert len(set(keys)) == len(keys)  # disjoint splits
        for x in rows["probes"]:
            single_token_id(qwen, x["answer"], cap) and single_token_id(qwen, x["distractor"], cap)
    rows = [json.loads(l) for l in (workdir / "data/prepared/target/train.jsonl").read_text().splitlines()]
    assert all(r["prompt"] == qwen.apply_chat_template([{"role": "user", "content": r["message"]}], tokenize=False,
                                                       add_generation_prompt=True, enable_thinking=False)
               for r in rows)
