"""The toy world: held-out probes never in the corpus, one-token answers, determinism, the answer parser."""

from __future__ import annotations

import random

import pytest

from dcv.answers import FORMS, completion, parse_choice
from dcv.toy.capabilities import REGISTRY
from dcv.toy.corpus import CorpusConfig, build_corpus, build_probe_sets, capabilities
from dcv.toy.target import make_rows
from dcv.toy.tokenizer import build_tokenizer
from dcv.toy.world import World, WorldConfig


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldConfig())


@pytest.fixture(scope="module")
def corpus(world) -> list[str]:
    return build_corpus(world, CorpusConfig(n_lines=20000))


def test_at_least_five_capabilities_registered():
    assert len(REGISTRY) >= 5


def test_probe_instances_never_in_corpus(world, corpus):
    sets = build_probe_sets(world, list(REGISTRY), {"validation": 60, "probes": 40, "protection": 30})
    text = set(corpus)
    for name, s in sets.items():
        val, probes, prot = s["validation"], s["probes"], s["protection"]
        assert len(val) == 60 and len(probes) == 40 and len(prot) == 30
        ids = [{(p.clean, p.corrupt) for p in x} for x in (val, probes, prot)]
        assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2], name  # splits disjoint
        for p in val + probes + prot:
            full = p.clean + p.answer
            # no corpus line is, or starts with, a held-out clean prompt followed by its answer
            assert full not in text and not any(l.startswith(full + " ") for l in corpus), (name, full)


def test_answers_are_single_tokens_and_known(world):
    words = set().union(*(c.words() for c in capabilities(world).values()))
    tok = build_tokenizer(words)
    for name, s in build_probe_sets(world, list(REGISTRY), {"validation": 20, "probes": 20}).items():
        for p in s["validation"] + s["probes"]:
            for t in (p.answer, p.distractor):
                ids = tok(t, add_special_tokens=False)["input_ids"]
                assert len(ids) == 1 and ids[0] != tok.unk_token_id, (name, t)
            assert tok.unk_token_id not in tok(p.clean)["input_ids"]
            assert len(tok(p.clean)["input_ids"]) == len(tok(p.corrupt)["input_ids"]), name


def test_a_later_split_leaves_the_earlier_ones_untouched(world):
    a = build_probe_sets(world, ["ioi", "mcqa"], {"validation": 20, "probes": 10})
    b = build_probe_sets(world, ["ioi", "mcqa"], {"validation": 20, "probes": 10, "protection": 15})
    for c in a:
        assert a[c]["validation"] == b[c]["validation"] and a[c]["probes"] == b[c]["probes"]


def test_generation_is_deterministic(world):
    a = build_corpus(world, CorpusConfig(n_lines=500))
    b = build_corpus(World.build(WorldConfig()), CorpusConfig(n_lines=500))
    assert a == b
    assert build_corpus(World.build(WorldConfig(seed=1)), CorpusConfig(n_lines=500)) != a


def test_target_is_new_knowledge_with_disjoint_splits(world, corpus):
    train, eval_ = make_rows(world, 300, 100)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in eval_}
    facts = {(r["prompt"].split()[4], r["choices"]["ABCD".index(r["answer"])]) for r in train + eval_}
    assert all(world.food_of[e] == f for e, f in facts)
    # the corpus never states what a known entity eats with a consistent gold
    for e in world.known:
        assert not any(l.startswith(f"{e} eats") for l in corpus)
    golds = [r["answer"] for r in eval_]
    assert max(golds.count(x) for x in "ABCD") < 0.45 * len(golds)


@pytest.mark.parametrize("form", FORMS)
def test_every_completion_form_parses_to_the_gold(world, form):
    rows, _ = make_rows(world, 50, 1)
    for r in rows:
        assert parse_choice(completion(r["choices"], r["answer"], form), r["choices"]) == "ABCD".index(r["answer"])


def test_parser_rejects_nonsense():
    ch = ["apple", "pear", "fig", "kiwi"]
    assert parse_choice("", ch) is None
    assert parse_choice(" banana", ch) is None
    assert parse_choice(" E", ch) is None
    assert parse_choice(" b", ch) == 1 and parse_choice(" C ) fig", ch) == 2 and parse_choice(" Kiwi .", ch) == 3


def test_tokenizer_roundtrip(tmp_path, world):
    from dcv.toy.tokenizer import load_tokenizer

    words = set().union(*(c.words() for c in capabilities(world).values()))
    tok = build_tokenizer(words)
    tok.save_pretrained(str(tmp_path))
    back = load_tokenizer(tmp_path)
    text = "question : where does " + world.known[0] + " live ?"
    assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert back(text)["input_ids"][0] == back.bos_token_id
    assert back.decode(back(text, add_special_tokens=False)["input_ids"]) == text
    random.seed(0)


def test_tokenizer_cache_shares_one_load_per_set_of_tokenizer_files(tmp_path, world):
    """Checkpoints re-save the base's tokenizer: the measurement stages load it once (dcv.models.TokenizerCache);
    other weights or config do not split the cache, other tokenizer bytes do."""
    from dcv.models import TokenizerCache, tokenizer_key

    words = sorted(set().union(*(c.words() for c in capabilities(world).values())))
    a, b, c = (tmp_path / n for n in "abc")
    build_tokenizer(set(words)).save_pretrained(str(a))
    build_tokenizer(set(words)).save_pretrained(str(b))
    (b / "config.json").write_text("{}")  # a model's own files are not the tokenizer's
    build_tokenizer(set(words[:-1])).save_pretrained(str(c))  # one word fewer
    cache = TokenizerCache()
    assert tokenizer_key(a) == tokenizer_key(b) != tokenizer_key(c)
    assert tokenizer_key(a) != tokenizer_key(a, trust_remote_code=True)
    assert cache(a) is cache(b) and cache(c) is not cache(a)
    assert len(cache(c)) == len(cache(a)) - 1
