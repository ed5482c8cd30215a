"""The code a stage runs, computed from its imports: what dvc.yaml's code deps of that stage must cover.

A stage's closure starts at its module (`stages/<stage>.py`; for an arm's stage also the arm's registered module)
and follows every import into `dcv/` and `stages/`, top-level and function-local alike, through package
`__init__`s. Two modules are kept but not followed:

- `stages/cli.py`, the dispatcher: it reaches every stage's module, but runs only the one named on the command line;
- `stages/params.py`, the schema: it imports every stage's config classes to validate the whole file, but a stage's
  results depend on its params' *values* (tracked by dvc.yaml's `params:`), and every key is required, so no
  schema default can reach a result; the config modules a stage really uses are reached through its own imports.

Arms are registered by module name (`dcv.arms.MODULES`, imported by `importlib`), so looking an arm up does not
pull every arm's trainer into every stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

NOT_FOLLOWED = {"stages.cli", "stages.params"}
PACKAGES = ("dcv", "stages")


def module_file(root: Path, name: str) -> Path | None:
    """The file of module `name` under `root` (a package's __init__.py), or None when it is not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    p = root.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    return None


def module_name(root: Path, file: Path) -> str:
    rel = file.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path, file: Path) -> set[str]:
    """Modules (ours) that `file` imports anywhere in its body, with every parent package."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    me = module_name(root, file)
    pkg = me if file.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]  # `from pkg import submodule`
        for n in names:
            parts = n.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                if module_file(root, ".".join(parts[:i])) is not None:
                    out.add(".".join(parts[:i]))
    return out


def closure(root: Path, entries: list[str]) -> set[Path]:
    """Files of every module reachable from `entries` (module names)."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        f = module_file(root, m)
        if f is None or m in NOT_FOLLOWED:
            continue
        todo += sorted(imports(root, f) - seen)
    return {module_file(root, m) for m in seen if module_file(root, m) is not None}


def covered(path: Path, deps: list[str], root: Path) -> bool:
    """Whether one of dvc.yaml's deps is `path` or a directory holding it."""
    rel = path.relative_to(root).as_posix()
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)
