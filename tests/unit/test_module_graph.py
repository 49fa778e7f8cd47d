"""The import graph of functions/docflow, read from the source with `ast` (nothing is imported).

- No cycle between docflow's modules, counting every import statement: at module level, inside functions
  (a lazy import is still a dependency, only a late one) and under ``if TYPE_CHECKING:``.
- Every lazy import (an import statement inside a function body) says why it is lazy: a comment of a few
  words on it or right above it (or above the run of import statements it starts: "# Imported here: ..."),
  or a note for the whole module in its docstring or module-level comments (a "Lazy imports: ..."
  paragraph, or "... are imported where they are used, so ..."). Lazy imports exist to keep heavy
  libraries (onnxruntime, Pillow, pdfium, Tesseract, boto3, the web stack, MLflow) out of the Lambda cold
  starts and processes that never use them; one without a reason is a cycle being hidden or an import
  that belongs at the top of the file.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "functions"
PACKAGE = "docflow"

# Lazy imports that still lack a reason, in files being reworked elsewhere at the time this test was written
# (the API's modules split out of service.py, and review/routes): file -> the modules it imports lazily
# without a reason. Each entry goes when its import gets a reason or moves to the top of its file; an entry
# that no longer matches anything fails the test, so this list only shrinks. The cycle test covers them all.
REASONS_PENDING: dict[str, set[str]] = {}

# A module-level note that covers its module's lazy imports: a "Lazy imports: ..." paragraph in the docstring,
# or a sentence such as "... are imported where they are used, so ..." / "each step imports its engine ...
# when it runs" / "... are imported inside the commands, so ...".
MODULE_NOTE = re.compile(r"\blazy imports?:|\bimport(?:s|ed)\b[^.;]{0,80}?\b(?:where|when|inside)\b", re.IGNORECASE)
# Tool directives are no reason.
PRAGMA = re.compile(r"\b(?:noqa(?::\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?|type:\s*ignore(?:\[[^\]]*\])?|pragma:.*)")
MIN_REASON_WORDS = 3


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def relpath(self) -> str:
        return self.path.relative_to(SOURCE_ROOT).as_posix()


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool
    type_checking: bool

    def describe(self, modules: dict[str, Module]) -> str:
        where = f"{modules[self.source].relpath}:{self.line}"
        kind = "lazy" if self.lazy else "TYPE_CHECKING" if self.type_checking else "top"
        return f"{self.source} -> {self.target}  ({where}, {kind})"


@dataclass(frozen=True)
class LazyImport:
    module: str
    node: ast.Import | ast.ImportFrom
    block_start: int  # first line of the run of consecutive import statements this one belongs to


def discover() -> dict[str, Module]:
    modules = {}
    for path in sorted((SOURCE_ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    return modules


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _known(name: str, modules: dict[str, Module]) -> str | None:
    """The module a dotted name lands in: the longest prefix that is one of ours."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def _targets(module: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE]
        return {t for t in (_known(n, modules) for n in names) if t}
    base = _absolute(module, node)
    if base.split(".")[0] != PACKAGE:
        return set()
    targets = set()
    for alias in node.names:
        # `from docflow.x import y`: the module docflow.x.y when there is one, else a name in docflow.x.
        submodule = f"{base}.{alias.name}"
        target = submodule if submodule in modules else _known(base, modules)
        if target:
            targets.add(target)
    return targets


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_list(
    body: list[ast.stmt], in_function: bool, type_checking: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool, int]]:
    """(import statement, inside a function, under TYPE_CHECKING, first line of its run of consecutive import
    statements) for every import in ``body`` and the statement lists nested in it."""
    block_start = 0
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            block_start = block_start or stmt.lineno
            yield stmt, in_function, type_checking, block_start
            continue
        block_start = 0
        inner = in_function or isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
        if isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
            yield from _walk_list(stmt.body, inner, True)
            yield from _walk_list(stmt.orelse, inner, type_checking)
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _walk_list(getattr(stmt, field, []), inner, type_checking)
        for handler in getattr(stmt, "handlers", []):
            yield from _walk_list(handler.body, inner, type_checking)
        for case in getattr(stmt, "cases", []):
            yield from _walk_list(case.body, inner, type_checking)


@dataclass
class Scan:
    modules: dict[str, Module]
    edges: list[Edge]
    lazy: list[LazyImport]


@pytest.fixture(scope="module")
def scan() -> Scan:
    modules = discover()
    edges, lazy = [], []
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for node, in_function, type_checking, block_start in _walk_list(tree.body, False, False):
            for target in sorted(_targets(module, node, modules)):
                edges.append(Edge(module.name, target, node.lineno, in_function, type_checking))
            if in_function:
                lazy.append(LazyImport(module.name, node, block_start))
    return Scan(modules, edges, lazy)


def strongly_connected(nodes: list[str], successors: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(successors.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_the_scan_sees_imports_at_every_level(scan: Scan) -> None:
    """Guards the two tests below against passing on a walker that finds nothing."""
    seen = {(e.source, e.target, e.lazy, e.type_checking) for e in scan.edges}
    assert ("docflow.pipeline.steps", "docflow.context", False, False) in seen  # top level
    assert ("docflow.context", "docflow.domain.classifier", True, False) in seen  # in a method
    assert ("docflow.context", "docflow.domain.ocr", False, True) in seen  # under TYPE_CHECKING
    assert ("docflow.handlers", "docflow.telemetry", False, False) in seen  # `from docflow import telemetry`
    assert len(scan.modules) > 50 and len(scan.lazy) > 20


def test_no_import_cycles(scan: Scan) -> None:
    successors: dict[str, set[str]] = {}
    for edge in scan.edges:
        successors.setdefault(edge.source, set()).add(edge.target)
    cycles = [
        component
        for component in strongly_connected(sorted(scan.modules), successors)
        if len(component) > 1 or component[0] in successors.get(component[0], ())
    ]
    report = []
    for component in cycles:
        members = set(component)
        report.append(f"cycle through {len(component)} module(s): {', '.join(component)}")
        report += [
            "    " + edge.describe(scan.modules)
            for edge in sorted(scan.edges, key=lambda e: (e.source, e.target, e.line))
            if edge.source in members and edge.target in members
        ]
    assert not cycles, "import cycles in functions/docflow:\n" + "\n".join(report)


def _comments(path: Path) -> dict[int, str]:
    """Line number -> the text of the comment on it."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens if tok.type == tokenize.COMMENT}


def _is_reason(comment: str | None) -> bool:
    if comment is None:
        return False
    return len(re.findall(r"[A-Za-z]{2,}", PRAGMA.sub("", comment))) >= MIN_REASON_WORDS


def _comment_only_lines(path: Path) -> set[int]:
    return {n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.lstrip()[:1] == "#"}


def _comment_above(line: int, comment_lines: set[int], comments: dict[int, str]) -> str | None:
    """The comment lines right above ``line`` (no blank line between), read as one text."""
    first = line
    while first - 1 in comment_lines:
        first -= 1
    return " ".join(comments[n] for n in range(first, line)) if first < line else None


def _module_note(path: Path, comments: dict[int, str]) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            inside.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    texts = [ast.get_docstring(tree) or ""]
    lines = sorted(n for n in comments if n not in inside)
    # A comment's sentence may run over several lines: consecutive comment lines are read as one text.
    block: list[str] = []
    for i, n in enumerate(lines):
        block.append(comments[n])
        if i + 1 == len(lines) or lines[i + 1] != n + 1:
            texts.append(" ".join(block))
            block = []
    return any(MODULE_NOTE.search(" ".join(text.split())) for text in texts)


def _imported(module: Module, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    return {_absolute(module, node)}


def test_every_lazy_import_says_why(scan: Scan) -> None:
    unexplained, pending_seen = [], set()
    for module_name in sorted({lazy.module for lazy in scan.lazy}):
        module = scan.modules[module_name]
        comments = _comments(module.path)
        if _module_note(module.path, comments):
            continue
        comment_lines = _comment_only_lines(module.path)
        for lazy in (lazy for lazy in scan.lazy if lazy.module == module_name):
            node = lazy.node
            own = any(_is_reason(comments.get(n)) for n in range(node.lineno, (node.end_lineno or node.lineno) + 1))
            above = (_comment_above(n, comment_lines, comments) for n in (node.lineno, lazy.block_start))
            if own or any(_is_reason(text) for text in above):
                continue
            pending = {(module.relpath, name) for name in _imported(module, node)}
            if pending <= {(path, name) for path, names in REASONS_PENDING.items() for name in names}:
                pending_seen |= pending
                continue
            unexplained.append(f"{module.relpath}:{node.lineno}: {ast.unparse(node)}")
    assert not unexplained, (
        "lazy imports without a reason (a comment on the import or just above it, or a module-level note such as "
        "a 'Lazy imports:' paragraph in the docstring); move those that buy nothing to the top of the file:\n"
        + "\n".join(unexplained)
    )
    stale = sorted({(path, name) for path, names in REASONS_PENDING.items() for name in names} - pending_seen)
    assert not stale, f"REASONS_PENDING entries that match no unexplained lazy import any more (remove them): {stale}"


MAX_LINES = 400
# What a long module's docstring says of its length: "Over 400 lines on purpose: <why>" (or "A little over ...").
LONG_ON_PURPOSE = re.compile(r"\bover 400 lines on purpose:\s*\S", re.IGNORECASE)


def test_long_modules_say_why() -> None:
    """No module in functions/ over 400 lines without the reason at its top: a room that holds several rooms
    is split, and one that is long because it is one piece says so where the reader starts."""
    unexplained = []
    for path in sorted(SOURCE_ROOT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n_lines = len(text.splitlines())
        if n_lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not LONG_ON_PURPOSE.search(docstring):
            unexplained.append(f"{path.relative_to(SOURCE_ROOT).as_posix()}: {n_lines} lines")
    assert not unexplained, (
        f"modules over {MAX_LINES} lines whose docstring does not say why ('Over 400 lines on purpose: ...'); "
        "split them by concern or state the reason:\n" + "\n".join(unexplained)
    )


PROJECT_ROOT = SOURCE_ROOT.parent
OWN_PACKAGES = ("docflow", "docflow_training")


def test_no_private_name_is_imported_from_another_module() -> None:
    """A leading underscore says "only this module uses it": a name another module of the product (functions/,
    training/, bench/) needs is made public, so that a reader of its home sees that others depend on it."""
    found = []
    for folder in ("functions", "training", "bench"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                    continue
                if node.module.split(".")[0] not in OWN_PACKAGES:
                    continue
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    found.append(f"{path.relative_to(PROJECT_ROOT).as_posix()}:{node.lineno}: {node.module} {private}")
    assert not found, "private names imported from another module (make them public):\n" + "\n".join(found)
