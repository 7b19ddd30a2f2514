"""The analysis package stays pure: no Prefect, Locust, Kubernetes or platform imports (fast tests, no side effects)."""

from __future__ import annotations

import ast
from pathlib import Path

import nightcap.analysis

FORBIDDEN = ("prefect", "locust", "kubernetes", "nightcap.platforms", "google")


def test_analysis_modules_import_nothing_impure() -> None:
    folder = Path(nightcap.analysis.__file__).parent
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN or n.startswith(FORBIDDEN)]
    assert found == []
    assert len(list(folder.glob("*.py"))) >= 7
