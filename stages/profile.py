"""Profiles: named sets of params overrides (`profiles/<name>.yaml`) applied to params.yaml in one command.

    dcv profile list
    dcv profile apply study -S data.target.path=/data/sciknoweval-chem-l3 [--params params.yaml] [--dry-run]

`apply` merges the profile's keys (and then each `-S KEY=VALUE`, a YAML value) into params.yaml, keeping its
comments and order (ruamel.yaml round trip), validates the result exactly as every stage will (`load_params`:
every key, the cross-field rules, the files it names), and only then replaces the file atomically. A profile may
only set keys params.yaml has: a typo is an error naming the profile file and key. After it, `make run` (or
`dcv check && dvc repro`) runs the pipeline in that setting; `git diff params.yaml` shows what changed.
"""

from __future__ import annotations

import io as _io
from pathlib import Path

from dcv.errors import DcvError

PROFILES = "profiles"


def profile_path(root: Path, name: str) -> Path:
    f = root / PROFILES / f"{name}.yaml"
    if not f.is_file():
        have = sorted(p.stem for p in (root / PROFILES).glob("*.yaml"))
        raise DcvError(f"{f}: no such profile (there are: {', '.join(have) or 'none'})")
    return f


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round trip: comments, order and flow style kept
    y.preserve_quotes = True
    y.width = 120
    return y


def merge(target, overrides, where: str, prefix: str = "") -> list[str]:
    """Set every leaf of `overrides` in `target` (ruamel maps), keys that `target` lacks refused; the dotted keys set."""
    done = []
    for k, v in overrides.items():
        key = f"{prefix}{k}"
        if k not in target:
            raise DcvError(f"{where}: {key}: not a key of params.yaml")
        if isinstance(v, dict) and isinstance(target[k], dict) and v:
            done += merge(target[k], v, where, key + ".")
        else:
            target[k] = v
            done.append(key)
    return done


def assignment(text: str) -> dict:
    """`a.b.c=VALUE` as {"a": {"b": {"c": VALUE}}} (VALUE read as YAML)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise DcvError(f"-S {text}: expected KEY=VALUE")
    out: dict = {}
    node = out
    *parents, leaf = key.strip().split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(value)
    return out


def apply(root: Path, params: Path, name: str, sets: list[str], dry_run: bool = False) -> tuple[list[str], str]:
    """The dotted keys the profile (then `sets`) changes, and the new text; written unless `dry_run` or invalid."""
    import yaml

    from dcv import io
    from stages.params import load_params

    src = profile_path(root, name)
    try:
        overrides = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DcvError(f"{src}: not valid YAML ({str(e).splitlines()[0]})") from None
    y = _yaml()
    doc = y.load(params.read_text(encoding="utf-8"))
    keys = merge(doc, overrides, str(src))
    for s in sets:
        keys += merge(doc, assignment(s), f"-S {s}")
    buf = _io.StringIO()
    y.dump(doc, buf)
    text = buf.getvalue()
    tmp = params.with_name(f".tmp-profile-{params.name}")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            load_params(tmp)
        except DcvError as e:
            raise DcvError(str(e).replace(str(tmp), f"{params} with profile {name}", 1)) from None
    finally:
        tmp.unlink(missing_ok=True)
    if not dry_run:
        io.write_bytes(params, text.encode("utf-8"))
    return keys, text


def main(params: str, name: str | None, sets: list[str], dry_run: bool) -> None:
    path = Path(params)
    if not path.is_file():
        raise DcvError(f"{path}: params file not found")
    root = path.resolve().parent
    if name is None:
        for f in sorted((root / PROFILES).glob("*.yaml")):
            first = next((line.lstrip("# ").strip() for line in f.read_text().splitlines() if line.startswith("#")), "")
            print(f"{f.stem}: {first}")
        return
    keys, _ = apply(root, path, name, sets, dry_run)
    verb = "would set" if dry_run else "set"
    print(f"{path}: profile {name}: {verb} {len(keys)} keys ({', '.join(keys)})")
