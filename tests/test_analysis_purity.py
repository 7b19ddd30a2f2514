"""Pure logic stays pure: the search, the analysis, quantities and the config import no Prefect, Locust,
Kubernetes, Google Cloud or platform code, directly or through the nightcap modules they import (fast
tests, no side effects). Checked on the source (AST), following nightcap imports transitively."""

from __future__ import annotations

import ast
from pathlib import Path

import nightcap

ROOT = Path(nightcap.__file__).parent
FORBIDDEN = ("prefect", "locust", "gevent", "kubernetes", "google", "nightcap.platforms", "nightcap.load.",
             "nightcap.run")
PURE = sorted([*(f"analysis/{p.name}" for p in (ROOT / "analysis").glob("*.py")),
               "search.py", "quantities.py", "config.py", "steps.py", "targets/reference_capacity.py",
               "load/open_loop.py", "warm_start.py", "warm_start_tune.py", "confirm.py"])


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _impure_imports(start: Path) -> list[str]:
    seen: set[Path] = set()
    todo, found = [start], []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            if name.split(".")[0] in FORBIDDEN or name.startswith(FORBIDDEN):
                found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {name}")
            elif name.startswith("nightcap.") and (target := _module_file(name)) is not None:
                todo.append(target)
    return found


def test_pure_modules_import_nothing_impure() -> None:
    assert len(PURE) >= 12
    assert {p: _impure_imports(ROOT / p) for p in PURE if _impure_imports(ROOT / p)} == {}


def test_the_check_sees_an_impure_import(tmp_path: Path) -> None:
    assert _impure_imports(ROOT / "load" / "runner.py")  # imports nightcap.load / platforms: not pure
    bad = tmp_path / "bad.py"
    bad.write_text("from prefect import flow\nimport nightcap.quantities\n")
    assert _impure_imports(bad) == [f"{bad}: prefect"]
