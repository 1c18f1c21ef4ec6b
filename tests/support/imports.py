"""Which third-party packages a Python source file imports: for the checks that requirements cover them."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def third_party_imports(path: Path, local: set[str]) -> Iterator[str]:
    """The top-level modules ``path`` imports absolutely, less the standard library and ``local`` ones."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                yield top
