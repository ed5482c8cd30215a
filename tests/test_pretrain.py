"""Packed pretraining of the toy base: lines packed side by side stay independent, the loss is the unpacked one,
and training is deterministic."""

from __future__ import annotations

import io

import pytest
import torch

from dcv.toy.corpus import CorpusConfig, build_corpus, capabilities
from dcv.toy.pretrain import (PretrainConfig, ToyModelConfig, build_model, encode_corpus, pack_lines, packed_loss,
                              pretrain)
from dcv.toy.tokenizer import build_tokenizer
from dcv.toy.world import World, WorldConfig

SMALL = ToyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    world = World.build(WorldConfig())
    tok = build_tokenizer(set().union(*(c.words() for c in capabilities(world).values())))
    ids, lengths = encode_corpus(build_corpus(world, CorpusConfig(n_lines=300)), tok, 64)
    return tok, ids, lengths


def segments(batch, pad_id: int) -> list[tuple[int, int, int]]:
    """(row, start, length) of every line of a packed batch, read back from its position ids (pads left out)."""
    out = []
    for r, pos in enumerate(batch.position_ids.tolist()):
        for s, p in enumerate(pos):
            if p == 0 and int(batch.input_ids[r, s]) != pad_id:
                n = 1
                while s + n < len(pos) and pos[s + n] == n:
                    n += 1
                out.append((r, s, n))
    return out


def model_with(tok, attn: str):
    m = build_model(SMALL, len(tok), tok, seed=0)
    m.config._attn_implementation = attn
    return m.eval()


def test_pack_lines_keeps_every_line_whole_once(data):
    tok, ids, lengths = data
    idx = torch.tensor([5, 3, 5, 17, 40, 2, 99, 123, 7, 8, 250, 1])  # a line may be drawn twice
    b = pack_lines(ids, lengths, idx, 48, tok.pad_token_id)
    assert b.input_ids.shape == b.position_ids.shape == b.labels.shape and b.input_ids.shape[1] == 48
    got = sorted(tuple(b.input_ids[r, s : s + n].tolist()) for r, s, n in segments(b, tok.pad_token_id))
    want = sorted(tuple(ids[i, : lengths[i]].tolist()) for i in idx.tolist())
    assert got == want
    # labels: every real token but each line's <bos>; nothing on padding
    real = b.input_ids != tok.pad_token_id
    assert int((b.labels != -100).sum()) == int(lengths[idx].sum()) - len(idx)
    assert bool((b.labels[~real] == -100).all()) and bool((b.labels[b.input_ids == tok.bos_token_id] == -100).all())
    assert b.input_ids.shape[0] < len(idx)  # several lines per row
    with pytest.raises(ValueError, match="pack_len"):
        pack_lines(ids, lengths, idx, int(lengths[idx].max()) - 1, tok.pad_token_id)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_logits_equal_each_line_alone(data, attn):
    tok, ids, lengths = data
    m = model_with(tok, attn)
    b = pack_lines(ids, lengths, torch.arange(20), 64, tok.pad_token_id)
    lines = segments(b, tok.pad_token_id)
    assert len(lines) == 20 and any(s > 0 for _, s, _ in lines)
    with torch.no_grad():
        packed = m(input_ids=b.input_ids, position_ids=b.position_ids, use_cache=False).logits  # [rows, T, vocab]
        for r, s, n in lines:
            alone = m(input_ids=b.input_ids[r : r + 1, s : s + n], use_cache=False).logits[0]  # [n, vocab]
            torch.testing.assert_close(packed[r, s : s + n], alone, rtol=1e-5, atol=1e-5)
        # The control: with a cache (the config's default use_cache=True) transformers skips packed-sequence
        # detection, so later lines of a row see their neighbours. This is why `packed_loss` passes use_cache=False.
        leaky = m(input_ids=b.input_ids, position_ids=b.position_ids, use_cache=True).logits
        later = [(r, s, n) for r, s, n in lines if s > 0]
        assert max(float((leaky[r, s : s + n] - packed[r, s : s + n]).abs().max()) for r, s, n in later) > 1e-3


def test_packed_loss_equals_padded_per_line_loss(data):
    tok, ids, lengths = data
    m = model_with(tok, "sdpa")
    idx = torch.arange(30, 62)
    with torch.no_grad():
        packed = packed_loss(m, pack_lines(ids, lengths, idx, 64, tok.pad_token_id))
        width = int(lengths[idx].max())
        batch = ids[idx, :width]
        mask = (torch.arange(width)[None, :] < lengths[idx][:, None]).long()  # [lines, width]
        padded = m(input_ids=batch, attention_mask=mask, labels=batch.masked_fill(mask == 0, -100)).loss
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)


def state_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def test_pretrain_is_deterministic_and_learns(data):
    tok, ids, lengths = data
    cfg = PretrainConfig(steps=12, batch_size=16, pack_len=48, warmup_steps=2, lr=3e-3, log_every=4, eval_every=100)
    runs, losses = [], []
    for seed in (0, 0, 1):
        m = build_model(SMALL, len(tok), tok, seed=seed)
        log: list[float] = []
        pretrain(m, ids, lengths, cfg, seed, on_log=lambda s, d: log.append(d["train/loss"]), progress=False)
        runs.append(state_bytes(m))
        losses.append(log)
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert losses[0][-1] < losses[0][0]


def test_a_saved_model_is_the_same_bytes_offline_and_online(data, tmp_path, monkeypatch):
    """transformers writes `local_files_only` of the loading call into tokenizer_config.json: a base saved under
    HF_HUB_OFFLINE=1 (tests, bench) and one saved without it must not differ (DVC would rerun it)."""
    from dcv.models import load_tokenizer, save_model

    tok = data[0]
    m = build_model(SMALL, len(tok), tok, seed=0)
    save_model(m, tok, tmp_path / "src", {"tokenizer": "word-level"})
    files = {}
    for env in ("1", None):
        if env is None:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        else:
            monkeypatch.setenv("HF_HUB_OFFLINE", env)
        loaded = load_tokenizer(tmp_path / "src")
        save_model(m, loaded, tmp_path / str(env), {"tokenizer": "word-level"})
        files[env] = {p.name: p.read_bytes() for p in sorted((tmp_path / str(env)).iterdir())}
    assert files["1"] == files[None]
    assert b"local_files_only" not in files["1"]["tokenizer_config.json"]
