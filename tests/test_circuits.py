"""dcv.circuits on hand-built tiny Qwen2 models (one head carrying the answer, GQA, padding, LoRA, bf16) and stage
`extract-circuits` on a tiny world (outputs, determinism, bad input, by hand, MLflow); its DVC reruns are tested with the arms (tests/test_arms.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import write_params

VOCAB = [f"w{i}" for i in range(40)]


def _tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", *VOCAB])}
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", pad_token="<pad>")


def _model(seed: int = 0, layers: int = 2, heads: int = 4, kv: int = 2, hidden: int = 32):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(VOCAB) + 2, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=64,
                      initializer_range=0.3, tie_word_embeddings=False, pad_token_id=1)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval()


def _rows(n: int = 6, lengths=(5, 7, 9), seed: int = 0) -> list[dict]:
    """Pairs whose corrupted prompt changes one early word; the last word (the answer position) is shared."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        L = lengths[i % len(lengths)]
        w = torch.randint(0, len(VOCAB), (L,), generator=g).tolist()
        c = list(w)
        c[1] = (w[1] + 1 + i) % len(VOCAB)
        a, d = torch.randperm(len(VOCAB), generator=g)[:2].tolist()
        rows.append({"clean": " ".join(VOCAB[x] for x in w), "corrupt": " ".join(VOCAB[x] for x in c),
                     "answer": f" {VOCAB[a]}", "distractor": f" {VOCAB[d]}"})
    return rows


def _one_head_model(layer: int = 1, head: int = 2):
    """Every o_proj column zero but those of one head: only that head moves information between positions."""
    model = _model()
    with torch.no_grad():
        for l, layer_mod in enumerate(model.model.layers):
            w = layer_mod.self_attn.o_proj.weight  # [d_model, head * d_head]
            d = w.shape[1] // model.config.num_attention_heads
            keep = w[:, head * d : (head + 1) * d].clone()
            w.zero_()
            if l == layer:
                w[:, head * d : (head + 1) * d] = 3 * keep
    return model


def _manual_patch(model, b, layer: int, head: int) -> torch.Tensor:
    """m(clean with head (layer, head) set to its corrupted value) - m(clean), with plain torch hooks."""
    o = model.model.layers[layer].self_attn.o_proj
    d = o.in_features // model.config.num_attention_heads
    store = {}

    def m(ids, hook):
        h = o.register_forward_pre_hook(hook)
        try:
            logits = model(input_ids=ids, attention_mask=b.mask).logits
        finally:
            h.remove()
        last = logits[torch.arange(len(ids)), b.last].float()
        return last.gather(1, b.answer[:, None])[:, 0] - last.gather(1, b.distractor[:, None])[:, 0]

    def grab(mod, args):
        store["z"] = args[0].clone()

    def put(mod, args):
        x = args[0].clone()
        x[..., head * d : (head + 1) * d] = store["z"][..., head * d : (head + 1) * d]
        return (x,)

    with torch.no_grad():
        m(b.corrupt, grab)
        return m(b.clean, put) - m(b.clean, lambda *a: None)


# ---------------------------------------------------------------------------------------------- library, fast


def test_one_head_carries_the_answer_every_method_ranks_it_first():
    from dcv.circuits import head_effects, pair_batches
    from dcv.circuits.extract import extract, k_at
    from dcv.circuits.patching import probe_model

    model, rows = _one_head_model(1, 2), _rows()
    batches = pair_batches(_tok(), rows, batch_size=4)
    probed = probe_model(model, batches)
    exact = head_effects(model, batches, "exact", probed=probed, heads_per_forward=3)
    assert exact.per_pair.shape == (len(rows), 2, 4)
    # the true patched difference: here the whole clean -> corrupt change, and a hand-made patch agrees
    true = exact.m_corrupt - exact.m_clean
    assert true.abs().mean() > 0.1
    torch.testing.assert_close(exact.per_pair[:, 1, 2], true, atol=1e-5, rtol=1e-4)
    for b in batches:
        torch.testing.assert_close(exact.per_pair[b.index, 1, 2], _manual_patch(model, b, 1, 2), atol=1e-5, rtol=1e-4)
    others = exact.per_pair.clone()
    others[:, 1, 2] = 0
    assert others.abs().max() < 1e-5
    for method in ("eap", "eap-ig"):
        e = head_effects(model, batches, method, steps=4, probed=probed).abs_mean
        assert int(e.flatten().argmax()) == 1 * 4 + 2, method
    x = extract(model, batches, heads_per_forward=5)
    assert x.curve.order[0] == (1, 2) and k_at(x.curve, 0.8) == (1, pytest.approx(1.0, abs=1e-4))


def test_exact_matches_a_hand_patch_on_every_head_with_gqa():
    """Grouped-query attention (2 KV heads for 4 query heads): each query head is its own site."""
    from dcv.circuits import find_heads, head_effects, pair_batches

    model = _model(seed=1, kv=2)
    sites = find_heads(model)
    assert (sites.n_layers, sites.n_heads, sites.d_head) == (2, 4, 8)
    batches = pair_batches(_tok(), _rows(4, lengths=(6,)), batch_size=4)
    e = head_effects(model, batches, "exact", heads_per_forward=3)
    for l in range(2):
        for h in range(4):
            torch.testing.assert_close(e.per_pair[:, l, h], _manual_patch(model, batches[0], l, h), atol=1e-5, rtol=1e-4)


def test_patched_forwards_start_at_their_first_patched_layer_and_give_the_same_m():
    """With the clean layer outputs, a forward skips the layers below the first one its interventions patch (counted
    here): m is the full forward's, for one-head, multi-layer and empty interventions; the layers compute again
    after."""
    from dcv.circuits import find_heads, pair_batches
    from dcv.circuits.patching import clean_layer_outputs, one_hot_heads, patched_metric, probe_model

    model = _model(seed=6, layers=3)
    b = pair_batches(_tok(), _rows(4), batch_size=4)[0]
    p = probe_model(model, [b])
    run, sites = p.runs[0], find_heads(model)
    choice = torch.cat([one_hot_heads(p.shape), one_hot_heads(p.shape)[:4].sum(0, keepdim=True) +
                        one_hot_heads(p.shape)[-1:], torch.zeros(1, 3, 4, dtype=torch.long)])  # heads, L0 + L2, none
    calls = [0, 0, 0]
    hooks = [m.mlp.register_forward_pre_hook(lambda mod, a, l=l: calls.__setitem__(l, calls[l] + 1))
             for l, m in enumerate(sites.layers)]  # runs only when the layer is computed
    full = patched_metric(model, sites, run.batch, [run.corrupt_z], choice, 32)
    assert calls == [1, 1, 1]
    outs = clean_layer_outputs(model, sites, run.batch)
    calls[:] = [0, 0, 0]
    fast = patched_metric(model, sites, run.batch, [run.corrupt_z], choice, 32, outs)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast[-1], run.m_clean, atol=1e-5, rtol=1e-4)
    # forwards: layer 0's heads, layer 1's, layer 2's, the L0 + L2 one (from layer 0), the empty one (no layer)
    assert calls == [2, 3, 4]
    for h in hooks:
        h.remove()
    assert not any("forward" in m.__dict__ for m in sites.layers)
    torch.testing.assert_close(probe_model(model, [b]).runs[0].m_clean, run.m_clean)


def test_the_last_mlp_at_the_answer_position_only_changes_neither_m_nor_its_gradients():
    """`logits_at` with the sites runs the last layer's MLP on one position per row (padded rows of unequal length):
    m and dm/d(embeddings) equal the full forward's."""
    from dcv.circuits import find_heads, pair_batches
    from dcv.circuits.patching import metric

    model = _model(seed=7, layers=3)
    sites = find_heads(model)
    b = pair_batches(_tok(), _rows(6), batch_size=6)[0]
    assert len(set(b.last.tolist())) > 1
    seen = []
    hook = sites.layers[-1].mlp.down_proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0].shape[1]))
    out = {}
    for with_sites in (False, True):
        x = model.get_input_embeddings()(b.clean).detach().requires_grad_(True)
        m = metric(model, None, b.mask, b.last, b.answer, b.distractor, embeds=x, sites=sites if with_sites else None)
        out[with_sites] = (m.detach(), torch.autograd.grad(m.sum(), x)[0])
    hook.remove()
    assert seen == [b.clean.shape[1], 1]
    torch.testing.assert_close(out[True][0], out[False][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[True][1], out[False][1], atol=1e-5, rtol=1e-4)


def test_gradient_methods_from_scratch_equal_the_cached_path_and_leave_grads_alone():
    """Without cached runs, eap / eap-ig take the clean run from their gradient pass: same effects and m as with
    `probe_model`'s runs, and the model's requires_grad flags are as before."""
    from dcv.circuits import head_effects, pair_batches
    from dcv.circuits.patching import probe_model

    model, rows = _model(seed=6), _rows(6, lengths=(4, 9, 6))
    model.model.embed_tokens.weight.requires_grad_(False)
    flags = [q.requires_grad for q in model.parameters()]
    batches = pair_batches(_tok(), rows, batch_size=4)
    probed = probe_model(model, batches)
    for method, steps in (("eap", 1), ("eap-ig", 3)):
        cold, warm = head_effects(model, batches, method, steps), head_effects(model, batches, method, steps, probed=probed)
        assert cold.per_pair.abs().max() > 1e-3
        for a, b in ((cold.per_pair, warm.per_pair), (cold.m_clean, warm.m_clean), (cold.m_corrupt, warm.m_corrupt)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert [q.requires_grad for q in model.parameters()] == flags


def test_padded_batches_equal_unbatched():
    from dcv.circuits import pair_batches
    from dcv.circuits.extract import extract

    model, tok, rows = _model(seed=2), _tok(), _rows(6, lengths=(4, 9, 6))
    padded = pair_batches(tok, rows, batch_size=6)
    assert len(padded) == 1 and (padded[0].mask == 0).any()
    alone = pair_batches(tok, rows, batch_size=1)
    for method in ("exact", "eap-ig"):
        a, b = extract(model, padded, method, steps=3), extract(model, alone, method, steps=3)
        torch.testing.assert_close(a.effects.per_pair, b.effects.per_pair, atol=1e-4, rtol=1e-4)
        assert a.curve.f == pytest.approx(b.curve.f, abs=1e-4)


def test_lora_wrapped_model_equals_its_merged_weights():
    import copy

    from peft import LoraConfig, get_peft_model

    from dcv.circuits import find_heads, head_effects, pair_batches

    torch.manual_seed(3)
    wrapped = get_peft_model(_model(seed=3), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"],
                                                        init_lora_weights=False)).eval()
    merged = copy.deepcopy(wrapped).merge_and_unload().eval()
    assert find_heads(wrapped).shape == (2, 4)
    batches = pair_batches(_tok(), _rows(4), batch_size=4)
    for method in ("exact", "eap"):
        a, b = (head_effects(m, batches, method) for m in (wrapped, merged))
        torch.testing.assert_close(a.per_pair, b.per_pair, atol=1e-4, rtol=1e-3)


def test_bf16_runs_and_finds_the_head():
    from dcv.circuits import pair_batches
    from dcv.circuits.extract import extract

    model = _one_head_model(0, 1).to(torch.bfloat16)
    batches = pair_batches(_tok(), _rows(), batch_size=4)
    for method in ("exact", "eap", "eap-ig"):
        x = extract(model, batches, method, steps=2)
        assert x.record["dtype"] == "bfloat16" and torch.isfinite(x.effects.per_pair).all()
        assert x.curve.order[0] == (0, 1), method


def test_cross_model_patching_of_a_model_into_itself_changes_nothing():
    from dcv.circuits import pair_batches
    from dcv.circuits.cross_model import cross_model_effects
    from dcv.circuits.extract import BaseReference, extract

    tok, rows = _tok(), _rows()
    base = extract(_model(seed=4), pair_batches(tok, rows, 4))
    ref = BaseReference(base.probed, base.curve.order)
    assert cross_model_effects(base.probed, base.probed).abs().max() < 1e-5
    other = extract(_model(seed=5), pair_batches(tok, rows, 4), base=ref)
    r = other.record
    assert r["base_circuit"]["order"] == [list(h) for h in base.curve.order]
    assert len(r["cross_model"]["effects_per_pair"]) == len(rows) and r["cross_model"]["effects"] != r["effects"]


def test_methods_are_registry_entries_bound_once_from_the_config():
    """The params' method names are the registry's; knobs come from CircuitsConfig fields (validated as params are);
    a new entry runs through extract and the validation without any caller knowing its name."""
    from typing import get_args

    from dcv.circuits import pair_batches
    from dcv.circuits.config import CircuitsConfig, Method as MethodName
    from dcv.circuits.effects import exact
    from dcv.circuits.extract import extract, validate_methods
    from dcv.circuits.methods import REGISTRY, Method, bind, reference

    assert set(get_args(MethodName)) == set(REGISTRY)
    cfg = CircuitsConfig.model_validate({"eap_ig_steps": 3, "heads_per_forward": 7})
    assert bind("eap-ig", cfg).knobs == {"steps": 3, "chunk": 7} and bind("eap-ig", cfg).steps == 3
    assert bind("exact", cfg).knobs == {"heads_per_forward": 7} and bind("exact", cfg).steps is None
    assert bind("eap", cfg).steps is None and reference(cfg).name == "exact"
    with pytest.raises(ValueError, match="eap_ig_steps"):
        bind("eap-ig", eap_ig_steps=0)
    with pytest.raises(ValueError, match="unknown method 'exakt'"):
        bind("exakt")

    model, rows = _one_head_model(1, 2), _rows()
    batches = pair_batches(_tok(), rows, batch_size=4)
    flipped = Method("flipped", lambda p, heads_per_forward: -exact(p, heads_per_forward),
                     {"heads_per_forward": "heads_per_forward"}, validate=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(REGISTRY, "flipped", flipped)
        x = extract(model, batches, bind("flipped", cfg), heads_per_forward=5)
        ref = extract(model, batches, bind("exact", cfg), heads_per_forward=5)
        v = validate_methods(x.probed, ref.effects, 1, cfg)
    assert x.record["method"] == "flipped" and x.record["steps"] is None
    assert x.record["effects"] == [[-e for e in row] for row in ref.record["effects"]]
    assert x.record["faithfulness"] == ref.record["faithfulness"]  # the same |e| ranking
    assert v["rho_flipped_vs_exact"] == pytest.approx(-1.0, abs=1e-3) and {"rho_eap_vs_exact", "seconds_eap_ig"} <= set(v)


def test_exact_on_sampled_heads_is_exact_there_and_validates_on_them():
    """`circuits.validate_heads`: exact patching of a seeded sample of heads equals exact's effects at those heads;
    with every head sampled the comparison is validate_methods' own; a method that flips exact has rho -1 on any
    sample."""
    from dcv.circuits import pair_batches
    from dcv.circuits.config import CircuitsConfig
    from dcv.circuits.effects import exact, exact_heads, sampled_heads
    from dcv.circuits.extract import extract, validate_methods, validate_on_sample
    from dcv.circuits.methods import REGISTRY, Method, bind

    cfg = CircuitsConfig.model_validate({"eap_ig_steps": 3, "heads_per_forward": 5, "validate_heads": 5})
    model, rows = _one_head_model(1, 2), _rows()
    x = extract(model, pair_batches(_tok(), rows, batch_size=4), bind("exact", cfg), heads_per_forward=5)
    L, H = x.probed.shape
    heads = sampled_heads((L, H), 5)
    assert heads == sampled_heads((L, H), 5) and len(set(heads)) == 5 and heads == sorted(heads)
    assert heads != sampled_heads((L, H), 5, seed=1) and sampled_heads((L, H), 10_000) == [(l, h) for l in range(L) for h in range(H)]
    full = exact(x.probed, 5)
    assert torch.allclose(exact_heads(x.probed, heads, 3), full[:, [l for l, _ in heads], [h for _, h in heads]], atol=1e-6)
    every = validate_on_sample(x.probed, L * H, 3, cfg)
    assert every["validate_heads"] == L * H
    assert {k: v for k, v in every.items() if not k.startswith("seconds") and k != "validate_heads"} == \
        {k: v for k, v in validate_methods(x.probed, x.effects, 3, cfg).items() if not k.startswith("seconds")}
    flipped = Method("flipped", lambda p, heads_per_forward: -exact(p, heads_per_forward),
                     {"heads_per_forward": "heads_per_forward"}, validate=True)
    x = extract(_model(), pair_batches(_tok(), rows, batch_size=4), bind("exact", cfg), heads_per_forward=5)
    with pytest.MonkeyPatch.context() as mp:  # a random model: every head has an effect
        mp.setitem(REGISTRY, "flipped", flipped)
        v = validate_on_sample(x.probed, 5, 3, cfg)
    assert v["validate_heads"] == 5 and v["topk_k"] == max(1, round(3 * 5 / (L * H)))
    assert v["rho_flipped_vs_exact"] == pytest.approx(-1.0, abs=1e-3) and v["magnitude_ratio_flipped"] == pytest.approx(1.0)


def test_rank_and_curve_helpers():
    from dcv.circuits.faithfulness import area, circuit_sizes, smallest_k
    from dcv.circuits.rank import magnitude_ratio, spearman, topk_overlap

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)  # ties get average ranks
    assert topk_overlap([[5, -4], [0, 1]], [[-6, 0], [3, 1]], 2) == 0.5
    assert magnitude_ratio([0.01, -0.02], [1, -2]) == pytest.approx(0.01)
    assert circuit_sizes(4) == [0, 1, 2, 3, 4] and circuit_sizes(576, 5) == [0, 144, 288, 432, 576]
    assert smallest_k([0, 1, 2], [0.0, 0.85, 1.0], 0.8) == 1 and smallest_k([0, 1], [0.0, 0.5], 0.8) is None
    assert area([0, 2, 4], [0.0, 1.0, 1.0], 4) == pytest.approx(0.75)


def test_unequal_clean_and_corrupt_lengths_name_file_and_line():
    from dcv.circuits import pair_batches
    from dcv.errors import DcvError

    rows = _rows(3)
    rows[1]["corrupt"] += " w1"
    with pytest.raises(DcvError, match=r"probes/x.jsonl:2: clean and corrupt prompts are \d+ and \d+ tokens"):
        pair_batches(_tok(), rows, 4, "probes/x.jsonl")


# --------------------------------------------------------------------------------------------- stage, tiny

CIRCUITS = {"circuits": {"batch_size": 8, "heads_per_forward": 8, "eap_ig_steps": 3},
            "common": {"arms": ["sft", "rl"]}, "dcv": {"pairs": [["sft", "rl"]]}}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _tree_bytes(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny world's probes and base (stages prepare-data and base), plus hand-made arm checkpoints: the base with
    perturbed weights saved in the arms' layout (sft steps 2 and 4, rl step 4; `final` = step 4)."""
    from dcv.models import load_model, read_marker, save_model

    d = tmp_path_factory.mktemp("circuits-project")
    write_params(d / "params.yaml", CIRCUITS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        for s in ("prepare-data", "base"):
            r = _invoke("stage", s, "--params", str(d / "params.yaml"))
            assert r.exit_code == 0, r.output
    (d / "mlflow.db").unlink()
    model, tok = load_model(d / "models/base")
    torch.manual_seed(0)
    for arm, step in (("sft", 2), ("sft", 4), ("rl", 4)):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        marker = {**read_marker(d / "models/base"), "arm": arm, "seed": 0, "step": step}
        save_model(model, tok, d / f"models/{arm}/seed-0/checkpoints/step-{step}", marker)
        if step == 4:
            save_model(model, tok, d / f"models/{arm}/seed-0/final", marker)
    return d


@pytest.fixture
def proj(project: Path, tmp_path: Path, monkeypatch) -> Path:
    d = tmp_path / "p"
    shutil.copytree(project, d)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    monkeypatch.chdir(d)
    return d


def test_stage_writes_every_model_and_capability_deterministically(proj: Path):
    import mlflow

    from dcv.circuits.faithfulness import choosable_sizes

    r = _invoke("stage", "extract-circuits")
    assert r.exit_code == 0, r.output
    caps = sorted(p.stem for p in (proj / "data/prepared/probes").glob("*.jsonl"))
    ids = ["base", "rl/seed-0/step-4", "sft/seed-0/step-2", "sft/seed-0/step-4"]
    index = json.loads((proj / "circuits/index.json").read_text())
    assert sorted(index["models"]) == ids and index["models"]["sft/seed-0/step-4"]["final"] is True
    assert "target" in caps  # the target task's own pairs: 4 of them in the tiny params, 8 for each prior capability
    n = {cap: 4 if cap == "target" else 8 for cap in caps}
    for mid in ids:
        for cap in caps:
            if cap == "target" and mid != "base":  # circuits.study_effects: base: fine-tuned models get its mask only
                assert not (proj / f"circuits/{mid}/{cap}.json").exists()
                continue
            c = json.loads((proj / f"circuits/{mid}/{cap}.json").read_text())
            assert (c["model"], c["capability"], c["method"], c["n_pairs"], c["n_layers"], c["n_heads"]) == (mid, cap, "exact", n[cap], 2, 4)
            e, pp = torch.tensor(c["effects"]), torch.tensor(c["effects_per_pair"])
            assert pp.shape == (n[cap], 2, 4) and torch.allclose(pp.mean(0), e, atol=1e-4)
            f = c["faithfulness"]
            # every size on the base (faithfulness_sizes: all); circuits.checkpoint_sizes (5) on fine-tuned models,
            # and the base's discovery ranking, where score-dcv reads F(C0), at the sizes it can choose C0 at
            assert f["k"] == (list(range(9)) if mid == "base" else [0, 2, 4, 6, 8])
            assert f["f"][0] == 0 and f["f"][-1] == pytest.approx(1, abs=1e-3)
            disc = json.loads((proj / f"circuits/discovery/base/{cap}.json").read_text())["faithfulness"]
            assert c["discovery_circuit"]["k"] == (list(range(9)) if mid == "base" else
                                                   choosable_sizes(disc["k"], disc["f"]))
            assert "seconds" not in c and set(c["metric"]) == {"clean", "corrupt", "empty"}
            if mid == "base":
                assert c["base_circuit"] == f and c["cross_model"] is None
            else:
                assert c["base_circuit"]["order"] == base_order[cap] and c["base_circuit"]["k"] == f["k"]
                assert torch.tensor(c["cross_model"]["effects_per_pair"]).shape == (n[cap], 2, 4)
            assert (proj / f"circuits/{mid}/{cap}.png").read_bytes()[:4] == b"\x89PNG"
        # The study's DBM mask on `target` only (circuits.study_capabilities), whatever the method.
        assert sorted(x.name for x in (proj / f"circuits/{mid}/study").iterdir()) == ["target.json"]
        sm = json.loads((proj / f"circuits/{mid}/study/target.json").read_text())
        v = torch.tensor(sm["values"])
        assert (sm["model"], sm["capability"], sm["method"], sm["n_pairs"], v.shape) == (mid, "target", "dbm", 4, (2, 4))
        assert ((v >= 0) & (v <= 1)).all() and sm["circuit"] == torch.nonzero(v > 0.5).tolist()
        assert sm["size"] == len(sm["circuit"]) and "seconds" not in sm and (sm["f"] is None or sm["f"] == sm["f"])
        if mid == "base":
            base_order = {cap: json.loads((proj / f"circuits/base/{cap}.json").read_text())["faithfulness"]["order"]
                          for cap in caps}
    m = json.loads((proj / "metrics/extract-circuits.json").read_text())
    assert m["method"] == "exact" and m["n_models"] == 4 and sorted(m["capabilities"]) == caps
    keys = {"k80", "f_at_k80", "n_heads", "cpr", "rho_eap_vs_exact", "rho_eap_ig_vs_exact", "topk_overlap_eap",
            "topk_overlap_eap_ig", "magnitude_ratio_eap", "magnitude_ratio_eap_ig", "seconds"}
    for v in m["capabilities"].values():
        assert keys <= set(v) and v["n_heads"] == 8
    assert set(m["study"]) == {"target"} and m["study"]["target"]["n_heads"] == 8
    assert m["study"]["target"]["base_size"] == json.loads((proj / "circuits/base/study/target.json").read_text())["size"]
    assert index["study_capabilities"] == ["target"]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("dcv-test").experiment_id],
                                "tags.`dcv.stage` = 'extract-circuits'")
    assert run.data.metrics[f"capabilities.{caps[0]}.cpr"] == m["capabilities"][caps[0]]["cpr"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "circuits/base")} >= {f"circuits/base/{caps[0]}.json"}
    first = _tree_bytes(proj / "circuits")
    assert _invoke("stage", "extract-circuits").exit_code == 0
    assert _tree_bytes(proj / "circuits") == first  # byte-identical on rerun


@pytest.mark.parametrize("edit, needle", [
    ({"method": "exakt"}, "params.yaml: circuits.method: Input should be 'exact', 'eap', 'eap-ig' or 'dbm'"),
    ({"faithfulness_sizes": 1}, "params.yaml: circuits.faithfulness_sizes: must be 'all' or an integer >= 2"),
    ({"validate": "yes"}, "params.yaml: circuits.validate: Input should be a valid boolean"),
    ({"batch_size": 0}, "params.yaml: circuits.batch_size: must be 'auto' or an integer from 1 to 100000 (got 0)"),
    ({"study_capabilities": ["ioi", "chemistry"]},
     "params.yaml: circuits.study_capabilities: chemistry is no probe set of prepare-data (there are: "),
])
def test_bad_params_stop_in_one_line_writing_nothing(proj: Path, edit: dict, needle: str):
    write_params(proj / "params.yaml", {"circuits": {**CIRCUITS["circuits"], **edit}})
    r = _invoke("stage", "extract-circuits")
    assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (proj / "circuits").exists() and not (proj / "metrics/extract-circuits.json").exists()
    assert not (proj / "mlflow.db").exists()


def test_study_masks_are_the_dbm_fit_and_none_without_study_capabilities(proj: Path):
    """The stage's study mask is what method dbm fits on that model and pairs; [] fits none."""
    from dcv.circuits import pair_batches
    from dcv.circuits.config import CircuitsConfig
    from dcv.circuits.methods import bind
    from dcv.models import load_model
    from dcv.probes import load_probes

    write_params(proj / "params.yaml", {**CIRCUITS, "circuits": {**CIRCUITS["circuits"], "study_capabilities": ["ioi"]}})
    r = _invoke("stage", "extract-circuits")
    assert r.exit_code == 0, r.output
    model, tok = load_model(proj / "models/sft/seed-0/checkpoints/step-2")
    cfg = CircuitsConfig.model_validate({**CircuitsConfig().model_dump(by_alias=True), **CIRCUITS["circuits"]})
    m = bind("dbm", cfg)(model, pair_batches(tok, load_probes(proj / "data/prepared/probes/ioi.jsonl"), cfg.batch_size))
    sm = json.loads((proj / "circuits/sft/seed-0/step-2/study/ioi.json").read_text())
    assert torch.allclose(torch.tensor(sm["values"]), m.values, atol=1e-5) and sm["circuit"] == [list(h) for h in m.circuit]
    assert not (proj / "circuits/base/study/target.json").exists()
    write_params(proj / "params.yaml", {**CIRCUITS, "circuits": {**CIRCUITS["circuits"], "study_capabilities": []}})
    r = _invoke("stage", "extract-circuits")
    assert r.exit_code == 0, r.output
    assert not list((proj / "circuits").rglob("study"))
    assert json.loads((proj / "metrics/extract-circuits.json").read_text())["study"] == {}


def test_bad_probe_pair_and_missing_seed_stop_before_anything(proj: Path):
    f = proj / "data/prepared/probes/ioi.jsonl"
    lines = f.read_text().splitlines()
    row = json.loads(lines[2])
    row["corrupt"] += " " + row["corrupt"].split()[-1]
    f.write_text("\n".join(lines[:2] + [json.dumps(row)] + lines[3:]) + "\n")
    r = _invoke("stage", "extract-circuits")
    assert r.exit_code == 2 and "data/prepared/probes/ioi.jsonl:3: clean and corrupt prompts" in r.output, r.output
    f.write_text("\n".join(lines) + "\n")
    write_params(proj / "params.yaml", {**CIRCUITS, "common": {"arms": ["sft", "rl"], "seeds": [0, 1]}})
    r = _invoke("stage", "extract-circuits")
    assert r.exit_code == 2 and "seed-1/checkpoints: no step-<n> checkpoints (seed 1 of arm sft" in r.output, r.output
    assert not (proj / "circuits").exists() and not (proj / "mlflow.db").exists()


def test_by_hand_on_a_checkpoint_and_on_a_hugging_face_dir(proj: Path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dcv.models import load_tokenizer

    r = _invoke("stage", "extract-circuits", "--model", "models/sft/seed-0/checkpoints/step-2", "--capability", "ioi")
    assert r.exit_code == 0, r.output
    c = json.loads((proj / "circuits-by-hand/sft/seed-0/step-2/ioi.json").read_text())
    assert c["model"] == "sft/seed-0/step-2" and c["cross_model"] is not None
    assert not (proj / "circuits").exists()
    # a plain Hugging Face directory outside models/: its own reference
    tok = load_tokenizer(proj / "models/base")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=1, pad_token_id=tok.pad_token_id)
    hf = proj.parent / "hf-qwen2"
    Qwen2ForCausalLM(cfg).save_pretrained(str(hf))
    tok.save_pretrained(str(hf))
    r = _invoke("stage", "extract-circuits", "--model", str(hf), "--capability", "facts", "--out", "by-hand")
    assert r.exit_code == 0, r.output
    c = json.loads((proj / "by-hand/hf-qwen2/facts.json").read_text())
    assert (c["n_layers"], c["n_heads"]) == (3, 4) and c["cross_model"] is None and c["base_circuit"] == c["faithfulness"]
    r = _invoke("stage", "extract-circuits", "--capability", "ioi")
    assert r.exit_code == 2 and "go with --model" in r.output


def test_auto_batch_trials_run_the_real_passes_and_take_the_largest_that_fits(project: Path):
    """`batch_size: auto`'s trials (the heaviest pass of extract-circuits, with a DBM step on target, and of the
    forgetting measurement) run on a real model; with memory to spare the largest batch is taken at once."""
    from dcv.circuits.config import CircuitsConfig
    from dcv.circuits.methods import bind
    from dcv.evaluation import MeasureConfig
    from dcv.evaluation import fitted_batch_size as eval_batch
    from dcv.models import load_model
    from dcv.probes import load_probes
    from stages.extract_circuits import fitted_batch_size as circuit_batch

    class Roomy:
        def __init__(self):
            self.trials = 0

        def free(self):
            return 1 << 40

        def start(self):
            self.trials += 1

        def peak(self):
            return 1

    model, tok = load_model(project / "models/base")
    caps = {f.stem: load_probes(f) for f in sorted((project / "data/prepared/probes").glob("*.jsonl"))}
    p = CircuitsConfig(batch_size="auto", heads_per_forward=8, dbm_steps=3)
    kw = {"method": bind("eap-ig", p), "sizes": 5, "heads_per_forward": 8}
    mem = Roomy()
    assert circuit_batch(model, tok, caps, p, kw, memory=mem) == max(len(r) for r in caps.values()) and mem.trials == 1
    rows = [json.loads(line) for line in (project / "data/prepared/target/eval.jsonl").read_text().splitlines()]
    mem = Roomy()
    cfg = MeasureConfig(batch_size="auto", max_new_tokens=3)
    assert eval_batch(model, tok, [r["prompt"] for r in rows], cfg, True, memory=mem) == len(rows) and mem.trials == 1
