"""The replayer's wiring module is the composition root's alone (issue #11, item 6)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_only_the_cli_imports_the_replayer_wiring() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for top in ("workers", "devnet", "bench")
        for path in (ROOT / top).rglob("*.py")
        if "workers.replayer.service" in _imports(path)
    )
    assert importers == ["workers/replayer/cli.py"]
