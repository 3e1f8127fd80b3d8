"""Layers import downwards only: every module's imports of ``rec_transfer`` are parsed (ast) and checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rec_transfer"
# Lowest first. A module may import its own layer and any layer below it, never one above.
LAYERS = [
    ("rec_transfer.utils", "rec_transfer.phase", "rec_transfer.metrics"),  # neutral: anyone may import them
    ("rec_transfer.text",),  # strings -> vectors; knows nothing about domains
    ("rec_transfer.data",),
    ("rec_transfer.models",),
    ("rec_transfer.callbacks",),
    # the command line and its console script, its target-only baseline, run bookkeeping, how it says input errors
    (
        "rec_transfer.cli",
        "rec_transfer.baseline",
        "rec_transfer.runs",
        "rec_transfer.summary",
        "rec_transfer.user_errors",
        "rec_transfer.console",
        "rec_transfer.entry",
        "rec_transfer.serving",
    ),
    ("rec_transfer.bench",),  # benchmark helpers, outside the library proper
]


def layer_of(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of ``rec_transfer``, wherever it stands (functions and TYPE_CHECKING too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            out.append((node.lineno, target))
    return sorted((line, m) for line, m in out if m == "rec_transfer" or m.startswith("rec_transfer."))


MODULES = sorted(PACKAGE.rglob("*.py"))


def upward_imports(path: Path) -> list[str]:
    name = module_name(path)
    if name == "rec_transfer":
        return []
    level = layer_of(name)
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line} ({name}) imports {target}"
        for line, target in imported(path)
        if target != "rec_transfer" and layer_of(target) > level
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_lower_layer_imports_a_higher_one(path: Path) -> None:
    assert upward_imports(path) == []


def test_the_check_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "rec_transfer" / "data" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..callbacks import DomainTransfer\n\nimport rec_transfer.models.recommender\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "rec_transfer")
    assert upward_imports(fake) == [
        "rec_transfer/data/bad.py:2 (rec_transfer.data.bad) imports rec_transfer.callbacks",
        "rec_transfer/data/bad.py:4 (rec_transfer.data.bad) imports rec_transfer.models.recommender",
    ]
