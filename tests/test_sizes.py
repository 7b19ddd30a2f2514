"""Files and functions stay a size a reader can hold: no file over 400 lines, no function over 60, in `nightcap/`,
`flows/` and `tasks/` (the report's templates in `results/report.py` are text, not logic, and are exempt from the
function limit). Checked on the source, so a split that ships files into pods (the locustfile, the reference
server) keeps to it too."""

from __future__ import annotations

import ast
from pathlib import Path

import nightcap
from source_ast import parse_source

REPO = Path(nightcap.__file__).parent.parent
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
EXEMPT_FUNCTIONS = {Path("nightcap/results/report.py")}


def _sources() -> list[Path]:
    return sorted(p for d in ("nightcap", "flows", "tasks") for p in (REPO / d).rglob("*.py"))


def test_no_file_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"split these by what they hold (limit {MAX_FILE_LINES} lines): {long}"


def test_no_function_over_60_lines() -> None:
    long = []
    for path in _sources():
        if path.relative_to(REPO) in EXEMPT_FUNCTIONS:
            continue
        for node in ast.walk(parse_source(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"split these into named steps (limit {MAX_FUNCTION_LINES} lines): {long}"
