"""The layers of ``src/mamori`` point one way, and no import circle exists anywhere in it.

Walks every module's imports from its source (module level, inside functions and under
``TYPE_CHECKING`` alike: a type-only import is still a dependency a reader has to follow) and
checks two things:

* no strongly connected component of more than one module (no circle);
* no module imports a module of a higher layer, except the pairs in :data:`EXCEPTIONS`, each
  with the reason it is allowed.

The layers are the picture in ``docs/architecture.md``: base → crypto → authz → audit trail →
records → domains → edges. A module belongs to the layer of the longest prefix that names it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

BASE, CRYPTO, AUTHZ, AUDIT, RECORDS, DOMAIN, EDGE = range(7)
LAYER_NAMES = ["base", "crypto", "authz", "audit trail", "records", "domain", "edge"]

# longest matching prefix wins
LAYERS: dict[str, int] = {
    "mamori": DOMAIN,  # patients, clinical, clinic, chart, fhir, auth, restrictions, backup …
    "mamori.errors": BASE,
    "mamori.canonical": BASE,
    "mamori.inputs": BASE,
    "mamori.db": BASE,
    "mamori.crypto": CRYPTO,
    # key rotation and the start-up check walk every sealed model: operations over the whole
    # instance, so they sit with the domains
    "mamori.crypto.rekey": DOMAIN,
    "mamori.crypto.startup": DOMAIN,
    "mamori.authz": AUTHZ,
    "mamori.audit": DOMAIN,  # review, verification, bundles, exports: the audit domain
    "mamori.audit.models": AUDIT,
    "mamori.audit.trail": AUDIT,
    "mamori.audit.appender": AUDIT,
    "mamori.audit.merkle": AUDIT,
    "mamori.records": RECORDS,
    "mamori.records.service": DOMAIN,  # history, entered-in-error, verification of a chart
    "mamori.settings": DOMAIN,  # reads every domain's settings section
    "mamori.models": DOMAIN,  # every model module, the derived kind lists, open_database()
    "mamori.migrate": DOMAIN,
    "mamori.migrations": EDGE,
    "mamori.web": EDGE,
    "mamori.ui": EDGE,
    "mamori.cli": EDGE,
    "mamori.app": EDGE,
    "mamori.__main__": EDGE,
}
EDGE_SUFFIXES = (".api", ".pages", "_pages")  # a domain's HTTP edge lives beside it

# (importer, imported) → why a lower layer may name a higher one
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for target in targets:
            # ``import a.b.c`` needs a.b.c; the packages above it hold nothing we check
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("mamori") and target != name and target != "mamori":
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    if module == "mamori":
        return BASE  # the package itself: its version string
    if module.endswith(EDGE_SUFFIXES):
        return EDGE
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return LAYERS[best]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle() -> None:
    assert _cycles(_graph()) == []


def test_no_import_from_a_higher_layer() -> None:
    upward: dict[str, list[str]] = defaultdict(list)
    for module, targets in _graph().items():
        for target in targets:
            if layer_of(target) > layer_of(module) and (module, target) not in EXCEPTIONS:
                upward[module].append(
                    f"{target} ({LAYER_NAMES[layer_of(module)]} → {LAYER_NAMES[layer_of(target)]})"
                )
    assert dict(upward) == {}


def test_every_exception_is_still_needed() -> None:
    graph = _graph()
    stale = [pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], set())]
    assert stale == []


def test_the_walk_sees_a_circle_and_an_upward_import() -> None:
    """The checks above can fail: a made-up graph with both faults is caught."""
    graph = {"mamori.db": {"mamori.patients.service"}, "mamori.patients.service": {"mamori.db"}}
    assert _cycles(graph) == [["mamori.db", "mamori.patients.service"]]
    assert layer_of("mamori.patients.service") > layer_of("mamori.db")
    assert layer_of("mamori.patients.api") == EDGE
    assert layer_of("mamori.audit.trail") == AUDIT
    assert layer_of("mamori.audit.review") == DOMAIN
