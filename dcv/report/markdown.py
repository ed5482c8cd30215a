"""Markdown pieces of the report: tables and figures with their captions."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def figure(name: str, caption: str) -> str:
    return f"![{caption}](figures/{name})\n\n*{caption}*"
