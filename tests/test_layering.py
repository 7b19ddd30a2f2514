"""Imports point down, and pure logic stays pure. Checked on the source (AST), so nothing is imported to check it.

Layering: the packages of `nightcap/`, `tasks/` and `flows/` sit in one order (LAYERS, bottom first). A module may
import its own layer or any below it, never one above; every import counts, at the top of a file, inside a
function or under TYPE_CHECKING (a lazy import hides an arrow, it does not remove it). The arrows that still run
up are listed in KNOWN_UPWARD with the reason; a new one fails with the file, the line and the import, and a
listed one that is gone fails too, so the list only shrinks. No module imports itself back through others
(no circles), whatever the layers.

Purity: the search, the analysis, quantities and the config import no Prefect, Locust, Kubernetes, Google Cloud,
MLflow or platform code, directly or through the nightcap modules they import (fast tests, no side effects).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import nightcap
from source_ast import parse_source

ROOT = Path(nightcap.__file__).parent
REPO = ROOT.parent

# bottom first; a module imports only its own layer and those before it
LAYERS: list[tuple[str, ...]] = [
    ("nightcap", "quantities"),  # `nightcap` is the package's own __init__ (a file map, no imports)
    ("config_sections", "config_history"),
    ("config",),
    ("steps",),  # StepRow and steps.csv: measured rows, read by analysis and everything above
    ("analysis",),
    ("search",),  # levels, knee, saturation, confirm, warm_start, warm_start_tune
    ("targets",),
    ("results",),
    ("processes",),  # the registry of what a run started, and its listen ports: platforms and load record here
    ("locust_env",),  # the locustfile's environment: the generators and the manifest preview build it
    ("platforms",),  # the Platform seam (base) and the platforms on this machine: local processes, an external URL
    ("kube",),  # Kubernetes and GKE: the platform in a cluster, its manifests, preflight; imports platforms.base
    ("load",),
    ("run",),
    ("tasks",),
    ("flows",),
    ("cli",),
]

# (importing file, imported module): why the arrow still runs up. Empty since issue 24 item 3 (registry and ports
# moved below platforms, the locustfile's environment below the manifest preview): keep it so.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

FORBIDDEN = ("prefect", "locust", "gevent", "kubernetes", "google", "mlflow", "nightcap.platforms", "nightcap.load.",
             "nightcap.run", "nightcap.processes", "nightcap.kube")
PURE = sorted([*(f"analysis/{p.name}" for p in (ROOT / "analysis").glob("*.py")),
               *(f"search/{p.name}" for p in (ROOT / "search").glob("*.py")),
               "quantities.py", "config.py", "steps.py", "targets/reference_capacity.py", "load/open_loop.py",
               "results/metrics_samples.py", "results/mlflow_fields.py", "results/glance.py", "results/run_end.py"])


def _sources() -> list[Path]:
    return sorted([*ROOT.rglob("*.py"), *(REPO / "tasks").glob("*.py"), *(REPO / "flows").glob("*.py")])


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_file(name: str, root: Path = REPO) -> Path | None:
    rel = Path(*name.split("."))
    for base in dict.fromkeys((root, REPO)):
        for candidate in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
            if candidate.exists():
                return candidate
    return None


@functools.cache
def _parsed(path: Path, stamp: tuple[int, int]) -> tuple[ast.AST, ...]:
    return tuple(ast.walk(parse_source(path.read_text())))


def _nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every AST node of a file, parsed once per version of it (these checks read each file many times)."""
    stat = path.stat()
    return _parsed(path, (stat.st_mtime_ns, stat.st_size))


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in _nodes(path):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _project_imports(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, module) for every import of a project module, wherever it stands; `from pkg import mod` names the
    module, `from mod import name` the module; relative imports are resolved from the file's package."""
    here = _module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in _nodes(path):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _module_file(sub, root) else base))
    return [(line, name) for line, name in found if name.split(".")[0] in ("nightcap", "tasks", "flows")
            and _module_file(name, root) is not None]


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[0] if parts[0] != "nightcap" else (parts[1] if len(parts) > 1 else "nightcap")
    for index, names in enumerate(LAYERS):
        if key in names:
            return index
    raise AssertionError(f"{module}: its package {key!r} is in no layer; add it to LAYERS in {Path(__file__).name}")


def upward_imports(paths: list[Path], root: Path = REPO) -> dict[tuple[str, str], int]:
    """(file, imported module) -> line, for every import of a layer above the file's own."""
    found: dict[tuple[str, str], int] = {}
    for path in paths:
        own = _layer(_module_name(path, root))
        for line, name in _project_imports(path, root):
            if _layer(name) > own:
                found.setdefault((str(path.relative_to(root)), name), line)
    return found


def circles(paths: list[Path], root: Path = REPO) -> list[list[str]]:
    """Modules that import each other, directly or round a loop (strongly connected components, Tarjan)."""
    graph = {_module_name(p, root): {n for _, n in _project_imports(p, root)} - {_module_name(p, root)}
             for p in paths}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_import_points_down() -> None:
    found = upward_imports(_sources())
    new = [f"{file}:{line} imports {name} ({'/'.join(LAYERS[_layer(name)])} is above "
           f"{'/'.join(LAYERS[_layer(_module_name(REPO / file))])})"
           for (file, name), line in sorted(found.items()) if (file, name) not in KNOWN_UPWARD]
    assert new == [], "imports that point up (move the function or type down, or pass it in):\n" + "\n".join(new)
    gone = sorted(set(KNOWN_UPWARD) - set(found))
    assert gone == [], f"fixed: remove these from KNOWN_UPWARD: {gone}"


def test_no_module_imports_itself_back() -> None:
    assert circles(_sources()) == []


def test_the_layering_check_sees_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    """Probe modules in a copy of the layout: a lazy import of results from analysis, and two modules that
    import each other (one through `from package import module`)."""
    (tmp_path / "nightcap" / "analysis").mkdir(parents=True)
    up = tmp_path / "nightcap" / "analysis" / "probe.py"
    up.write_text("def f():\n    from nightcap.results.summary import build_summary  # lazy: still an arrow\n")
    assert upward_imports([up], tmp_path) == {("nightcap/analysis/probe.py", "nightcap.results.summary"): 2}
    a, b = tmp_path / "nightcap" / "probe_a.py", tmp_path / "nightcap" / "probe_b.py"
    a.write_text("from nightcap import probe_b\n")
    b.write_text("from nightcap.probe_a import x\n")
    assert circles([a, b], tmp_path) == [["nightcap.probe_a", "nightcap.probe_b"]]


def impure_imports(start: Path, forbidden: tuple[str, ...] = FORBIDDEN) -> list[str]:
    """The `forbidden` imports of `start` and of every nightcap module it imports, directly or through others."""
    seen: set[Path] = set()
    todo, found = [start], []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            if name.split(".")[0] in forbidden or name.startswith(forbidden):
                found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {name}")
            elif name.startswith("nightcap.") and (target := _module_file(name)) is not None:
                todo.append(target)
    return found


def test_pure_modules_import_nothing_impure() -> None:
    assert len(PURE) >= 12
    assert {p: impure_imports(ROOT / p) for p in PURE if impure_imports(ROOT / p)} == {}


def test_the_check_sees_an_impure_import(tmp_path: Path) -> None:
    assert impure_imports(ROOT / "load" / "runner.py")  # imports nightcap.load / platforms: not pure
    bad = tmp_path / "bad.py"
    bad.write_text("from prefect import flow\nimport nightcap.quantities\n")
    assert impure_imports(bad) == [f"{bad}: prefect"]
