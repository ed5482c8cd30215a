"""Method `dbm` (Differentiable Binary Masking) on hand-built tiny Qwen2 models: it finds the one head that carries
the answer, its masks really move (gradients flow to the logits), the sparsity weight acts as it should, and it is
deterministic; its circuits record has a `mask` block and no effects."""

from __future__ import annotations

import pytest
import torch

from tests.test_circuits import VOCAB, _model, _one_head_model, _rows, _tok


def _predicted_rows(model, n: int = 8) -> list[dict]:
    """Probe rows whose answer is the model's own top word on the clean prompt (DBM's loss is -log p(answer), so the
    clean model must do the behaviour) and whose distractor is its top word on the corrupted one."""
    tok, rows = _tok(), _rows(n)

    def ranked(prompt: str) -> list[int]:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            return model(input_ids=ids).logits[0, -1, 2:].argsort(descending=True).tolist()  # words only

    for r in rows:
        c, x = ranked(r["clean"]), ranked(r["corrupt"])
        r["answer"], r["distractor"] = f" {VOCAB[c[0]]}", f" {VOCAB[x[0] if x[0] != c[0] else x[1]]}"
    return rows


@pytest.fixture(scope="module")
def one_head():
    from dcv.circuits import pair_batches
    from dcv.circuits.patching import probe_model

    model = _one_head_model(1, 2)
    batches = pair_batches(_tok(), _predicted_rows(model), batch_size=4)
    return model, batches, probe_model(model, batches)


def test_dbm_finds_the_one_head_and_its_record_has_a_mask_block(one_head):
    from dcv.circuits.config import CircuitsConfig
    from dcv.circuits.extract import extract
    from dcv.circuits.heatmap import record_png
    from dcv.circuits.methods import REGISTRY, bind

    model, batches, probed = one_head
    exact = bind("exact")(model, batches, probed=probed)
    assert exact.abs_mean[1, 2] > 0.1  # the head matters for the logit difference too
    r = bind("dbm")(model, batches, probed=probed)
    assert r.circuit == [(1, 2)]
    assert int(r.values.flatten().argmax()) == 1 * 4 + 2 and r.values[1, 2] > 0.99
    assert r.order()[0] == (1, 2) and set(r.order()[: len(r.circuit)]) == set(r.circuit)
    assert r.fit.nll_circuit == pytest.approx(r.fit.nll[-1], abs=0.05)  # the circuit alone does the clean job
    assert not REGISTRY["dbm"].magnitudes and not REGISTRY["dbm"].validate and REGISTRY["dbm"].from_scratch is None

    x = extract(model, batches, bind("dbm"), heads_per_forward=5)
    rec = x.record
    steps = CircuitsConfig().dbm_steps
    assert rec["method"] == "dbm" and rec["steps"] == steps
    assert rec["effects"] is None and rec["abs_effects"] is None and rec["effects_per_pair"] is None
    m = rec["mask"]
    assert m["circuit"] == [[1, 2]] and m["size"] == 1 and m["f"] == pytest.approx(1.0, abs=1e-3)
    assert torch.tensor(m["values"]).shape == (2, 4) and len(m["curve"]["nll"]) == steps
    cfg = CircuitsConfig()
    assert m["knobs"] == {"steps": cfg.dbm_steps, "lr": cfg.dbm_lr, "sparsity": 0.01, "t_start": 1.0, "t_end": 0.01,
                          "init": 1.0}
    assert rec["faithfulness"]["order"][0] == [1, 2] and rec["faithfulness"]["f"][1] == m["f"]
    assert record_png(rec, "dbm")[:4] == b"\x89PNG"


def test_masks_move_and_the_sparsity_weight_drives_them(one_head):
    """Fails if no gradient reaches the logits: they would stay at init (every mask 1, whatever lambda)."""
    from dcv.circuits.methods import bind

    model, batches, probed = one_head
    free = bind("dbm", dbm_lambda=0.0, dbm_steps=60)(model, batches, probed=probed)
    assert free.logits[1, 2] > 1.5  # the needed head's logit rose from init 1.0: the NLL gradient flows
    assert free.values[1, 2] > 0.99 and (1, 2) in free.circuit
    others = free.logits.clone()
    others[1, 2] = 1.0
    assert torch.equal(others, torch.ones(2, 4))  # heads that cannot matter get no gradient without lambda
    dense = bind("dbm", dbm_lambda=1000.0, dbm_steps=60)(model, batches, probed=probed)
    assert (dense.logits < 0).all() and (dense.values < 0.01).all() and dense.circuit == []


def test_dbm_is_deterministic_and_runs_in_bf16():
    from dcv.circuits import pair_batches
    from dcv.circuits.extract import extract
    from dcv.circuits.methods import bind

    model = _model(seed=8)
    batches = pair_batches(_tok(), _predicted_rows(model, 6), batch_size=4)
    a, b = (extract(model, batches, bind("dbm", dbm_steps=40), heads_per_forward=4) for _ in range(2))
    assert torch.equal(a.effects.logits, b.effects.logits) and a.record == b.record
    assert not torch.equal(a.effects.logits, torch.ones(2, 4))
    x = extract(model.to(torch.bfloat16), batches, bind("dbm", dbm_steps=20), heads_per_forward=4)
    assert x.record["dtype"] == "bfloat16" and torch.isfinite(x.effects.logits).all()


def test_dbm_knobs_are_validated_as_params():
    from dcv.circuits.methods import bind

    with pytest.raises(ValueError, match="dbm_temperature_end must not exceed dbm_temperature_start"):
        bind("dbm", dbm_temperature_start=0.1, dbm_temperature_end=1.0)
    with pytest.raises(ValueError, match="dbm_lr"):
        bind("dbm", dbm_lr=0.0)
