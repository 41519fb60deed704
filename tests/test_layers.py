"""Imports point one way (../shared/DESIGN.md): a package imports only from the packages below it, lazy imports
inside functions included, so a backbone never reaches for a task and evaluation never for transfer."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transferlab"
# Lowest first. options.py is the settings-field machinery every layer's configs use; cli_args.py builds the
# command line from those configs. tokenization/ is the old import path of inputs/text.py; compat.py holds packaging
# workarounds.
# tasks/ sits above training/: its checkpoint -> module factory reads the checkpoint format training/ writes.
LAYERS = ["errors", "options", "fsutil", "compat", "data", "inputs", "tokenization", "models", "heads", "objectives",
          "training", "tasks", "evaluation", "transfer", "recipes", "experiments", "cli_args", "cli", "__main__"]


def _imported_parts(path: Path) -> set[str]:
    """The top-level parts of transferlab a module imports (relative imports resolved), at any depth."""
    module = path.relative_to(PACKAGE).with_suffix("").parts
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(module[:-1] if path.name != "__init__.py" else module[:-1])
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("transferlab"):
                target = node.module.split(".")[1:]
            else:
                continue
            if target:
                parts.add(target[0])
            else:  # `from .. import name`: the names are the parts
                parts.update(alias.name for alias in node.names if alias.name != "__version__")
        elif isinstance(node, ast.Import):
            parts.update(a.name.split(".")[1] for a in node.names if a.name.startswith("transferlab."))
    return parts


def test_imports_point_down_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if own == "__init__":
            continue  # the package root re-exports the public API lazily
        for part in _imported_parts(path):
            part = part.removesuffix(".py")
            if part in LAYERS and part != own and LAYERS.index(part) > LAYERS.index(own):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {part} (above {own})")
    assert not wrong, "\n".join(wrong)


def test_every_package_has_a_layer():
    packages = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))
