"""Atomic outputs: everything is written to a hidden temporary sibling and renamed into place when complete.

A process killed mid-write leaves only `.tmp-<name>-<pid>-<id>` siblings, which no reader takes for a result and
which the next writer removes once their process is gone (a concurrent writer's are left alone). Replacing the old
output by the new one defers SIGINT and SIGTERM, so an interruption never leaves neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

TMP_PREFIX = ".tmp-"


def _tmp_sibling(path: Path) -> Path:
    return path.parent / f"{TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def clean_stale(path: Path) -> None:
    """Remove temporaries that a killed writer left beside `path` (those of a live process are its own)."""
    path = Path(path)
    if not path.parent.exists():
        return
    for p in path.parent.glob(f"{TMP_PREFIX}{path.name}-*"):
        m = re.fullmatch(r"(\d+)-[0-9a-f]+", p.name[len(f"{TMP_PREFIX}{path.name}-"):])
        if m is None or (int(m[1]) != os.getpid() and _writer_alive(int(m[1]))):
            continue  # another output's temporary (`base-x` beside `base`), or a live writer's
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def remove(path: Path) -> None:
    """Delete a file or directory if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with signals_deferred():
        remove(path)
        os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically (temporary sibling, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, fixed indent, trailing newline, so equal values give equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    write_text(path, dumps_json(obj))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSONL file; a malformed line (bad JSON, not an object, not UTF-8) raises DcvError naming file and line."""
    return [row for _, row in read_jsonl_lines(path)]


def read_jsonl_lines(path: Path) -> list[tuple[int, dict]]:
    """The rows of a JSONL file with their line numbers (blank lines skipped), for errors that name the line."""
    from dcv.errors import DcvError

    path = Path(path)
    if not path.is_file():
        raise DcvError(f"{path}: file not found")
    rows = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DcvError(f"{path}:{i}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                               ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DcvError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DcvError(f"{path}:{i}: expected a JSON object")
            rows.append((i, row))
    return rows


def json_safe(obj: Any) -> Any:
    """A copy with NaN and infinite floats as None (JSON has no NaN) and tuples as lists."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj


def write_csv(path: Path, columns: list[str], rows: Iterable[dict]) -> None:
    """A CSV file with a header; floats as repr, None as an empty field (the same values give the same bytes)."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        s = repr(v) if isinstance(v, float) else str(v)
        return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s

    lines = [",".join(columns)] + [",".join(cell(r.get(c)) for c in columns) for r in rows]
    write_text(path, "\n".join(lines) + "\n")
