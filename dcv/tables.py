"""Typed CSV tables: a frozen dataclass is the schema, one row a line; reading checks every cell against it.

A table written by one stage and read by others (measurements of every model, circuit scores of every checkpoint)
goes through here, so readers never guess types from text. Floats are written with `repr` (exact round trip), None
as an empty cell; a bad cell on reading is a DcvError naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

from dcv.errors import DcvError
from dcv.io import write_text

T = TypeVar("T")


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def to_csv(rows: Iterable[Any], cls: type) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for r in rows:
        w.writerow([_cell(getattr(r, n)) for n in names])
    return buf.getvalue()


def write_table(path: Path, rows: Iterable[Any], cls: type) -> None:
    """Write rows of dataclass `cls` atomically (the same rows give the same bytes)."""
    write_text(Path(path), to_csv(rows, cls))


def _parse(text: str, tp: Any) -> Any:
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    if text == "":
        if optional:
            return None
        raise ValueError("empty")
    if tp is bool:
        if text not in ("true", "false"):
            raise ValueError(f"{text!r} is not true/false")
        return text == "true"
    if tp is int:
        return int(text)
    if tp is float:
        return float(text)
    return text


def read_table(path: Path, cls: type[T]) -> list[T]:
    """Rows of a table written by `write_table`; its header must be exactly the schema's fields."""
    path = Path(path)
    if not path.is_file():
        raise DcvError(f"{path}: not found (run the stage that writes it first)")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != fields:
            raise DcvError(f"{path}:1: columns {header} differ from the schema {cls.__name__} {fields}")
        out = []
        for line, cells in enumerate(reader, 2):
            if len(cells) != len(fields):
                raise DcvError(f"{path}:{line}: {len(cells)} cells, the schema has {len(fields)} columns")
            kw = {}
            for name, text in zip(fields, cells):
                try:
                    kw[name] = _parse(text, hints[name])
                except ValueError as e:
                    raise DcvError(f"{path}:{line}: column {name}: {e}") from None
            out.append(cls(**kw))
    return out
