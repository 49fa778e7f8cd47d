"""The training source layer (layers/build.py SOURCE_LAYERS) ships every docflow_training module the training
Lambda functions import, directly or through the modules they import at load time. Read from the source with
`ast`, in a second: the full check, each function imported on its layers alone under Python 3.12, is
tests/infra/test_layers.py (slow)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "training" / "docflow_training"
HANDLERS = ROOT / "functions" / "docflow" / "handlers"


def _source_layers() -> dict[str, tuple[str, ...]]:
    spec = importlib.util.spec_from_file_location("layers_build", ROOT / "layers" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SOURCE_LAYERS  # type: ignore[no-any-return]


def _training_imports(path: Path, everywhere: bool) -> set[str]:
    """The docflow_training modules ``path`` imports: at module level (what loading it needs), or anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if everywhere else iter(tree.body)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("docflow_training"):
            if node.module == "docflow_training":
                found |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("docflow_training.")}
    return found


def test_the_training_layer_ships_what_the_training_functions_load() -> None:
    shipped = {Path(p).stem for p in _source_layers()["training"]}
    needed: set[str] = set()
    todo = set().union(*(_training_imports(p, everywhere=True) for p in HANDLERS.glob("*.py")))
    assert todo, "no handler imports docflow_training: this test reads the wrong files"
    while todo:
        name = todo.pop()
        needed.add(name)
        todo |= _training_imports(PACKAGE / f"{name}.py", everywhere=False) - needed
    assert needed <= shipped, f"imported by the training functions but not in the layer: {sorted(needed - shipped)}"
