"""The package's shape is checked, not hoped for: the import contracts of pyproject.toml ([tool.importlinter]:
layers from the command line down, engines and training apart from backends, a submitting side without the
training libraries) and no import cycle anywhere in runner/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

from tests.helpers import REPO_ROOT


def test_the_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("runner", cache_dir=None)
    cycles = [sorted(component) for component in _strongly_connected(graph) if len(component) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's components of the module graph (function-level imports included, as grimp reads them)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            found.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found
