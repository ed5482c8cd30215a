"""Loading and saving model directories, toy or Hugging Face, with their tokenizers and provenance.

Every directory the pipeline writes holds `dcv_model.json` saying how to load its tokenizer (the toy tokenizer must
be loaded with PreTrainedTokenizerFast, docs/stack.md gotcha 1) and where the weights came from.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from dcv.errors import DcvError

MARKER = "dcv_model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DcvError("device cuda was asked for, but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weight_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every weight file in a model directory, by relative path."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): sha256_file(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)}


def resolve_hf(ref: str, revision: str | None) -> tuple[Path, str | None]:
    """A local directory for a Hugging Face id or path, and the commit it resolves to (None for plain dirs).

    Offline (HF_HUB_OFFLINE=1) only the local cache is consulted.
    """
    p = Path(ref).expanduser()
    if p.is_dir():
        return p, None
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(ref, revision=revision,
                                       local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1"))
    except Exception as e:  # noqa: BLE001  (hub errors have many types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DcvError(f"cannot resolve {ref!r} (revision {revision}) as a local directory or a cached hub id: "
                       f"{first}") from None
    return local, local.name


def load_tokenizer(directory: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = Path(directory)
    marker = read_marker(directory)
    cfg_file = directory / "tokenizer_config.json"
    cls = json.loads(cfg_file.read_text()).get("tokenizer_class") if cfg_file.is_file() else None
    # A plain tokenizers-backed tokenizer: AutoTokenizer would rebuild the model type's own class from it.
    if marker.get("tokenizer") == "word-level" or cls in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return PreTrainedTokenizerFast.from_pretrained(str(directory))
    tok = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# Files a tokenizer is loaded from (tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.json,
# merges.txt, added_tokens.json, chat_template.jinja, tokenizer.model, ...), by the start of their names.
TOKENIZER_FILES = ("tokenizer", "special_tokens_map", "vocab", "merges", "added_tokens", "chat_template", "spiece")


def tokenizer_key(directory: Path, trust_remote_code: bool = False) -> str:
    """sha256 of what `load_tokenizer` reads in `directory`: its tokenizer files (names and bytes), the marker's
    tokenizer kind and `trust_remote_code`. Two directories with the same key load the same tokenizer."""
    directory = Path(directory)
    h = hashlib.sha256(json.dumps([read_marker(directory).get("tokenizer"), trust_remote_code]).encode())
    for f in sorted(directory.iterdir()):
        if f.is_file() and f.name.startswith(TOKENIZER_FILES):
            h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


class TokenizerCache:
    """One tokenizer per distinct set of tokenizer files (`tokenizer_key`), for stages that only read it while they
    load many checkpoints of one base: every checkpoint saves the base's tokenizer again, and loading Qwen's (7 MB
    of JSON) costs 0.5-1.3 s each time. The instance is shared, so a caller that changes its tokenizer (a trainer)
    must load its own."""

    def __init__(self) -> None:
        self._loaded: dict[str, object] = {}

    def __call__(self, directory: Path, trust_remote_code: bool = False):
        key = tokenizer_key(directory, trust_remote_code)
        if key not in self._loaded:
            self._loaded[key] = load_tokenizer(directory, trust_remote_code)
        return self._loaded[key]


def read_marker(directory: Path) -> dict:
    f = Path(directory) / MARKER
    return json.loads(f.read_text()) if f.is_file() else {}


def load_model(directory: Path, device: str = "cpu", dtype: str = "auto", trust_remote_code: bool = False,
               tokenizers: TokenizerCache | None = None):
    """(model, tokenizer) of a model directory, in eval mode on `device`; the tokenizer from `tokenizers` when given
    (shared with every directory of the same tokenizer files)."""
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise DcvError(f"{directory}: not a model directory (no config.json)")
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=resolve_dtype(dtype, dev),
                                                 trust_remote_code=trust_remote_code)
    model.to(dev).eval()
    return model, (tokenizers or load_tokenizer)(directory, trust_remote_code)


# Options of the call that loaded a tokenizer, which transformers writes back into tokenizer_config.json: with them
# the same model saved with and without HF_HUB_OFFLINE=1 differed by a byte (`local_files_only`), and DVC reran it.
LOAD_OPTIONS = ("local_files_only",)


def _drop_load_options(cfg_file: Path) -> None:
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        if any(k in cfg for k in LOAD_OPTIONS):
            kept = {k: v for k, v in cfg.items() if k not in LOAD_OPTIONS}
            cfg_file.write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def save_model(model, tok, directory: Path, marker: dict, state_dict: dict | None = None) -> None:
    """save_pretrained of model and tokenizer plus the marker; only deterministic files. `state_dict` gives the
    full weights when the model's own are sharded (ZeRO-3, FSDP)."""
    directory = Path(directory)
    model.save_pretrained(str(directory), safe_serialization=True, state_dict=state_dict)
    tok.save_pretrained(str(directory))
    _drop_load_options(directory / "tokenizer_config.json")
    (directory / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
