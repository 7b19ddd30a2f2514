"""Parsing the project's own source in tests that check its shape (layering, sizes)."""

from __future__ import annotations

import ast


def parse_source(source: str, tries: int = 5) -> ast.AST:
    """ast.parse, retried on CPython 3.11's spurious "AST constructor recursion depth mismatch" (python/cpython#106905:
    the depth counter is shared by every thread, so a background thread of an earlier test that builds an AST at the
    same moment fails this parse; the full CI suite met it once). A real syntax error is never retried."""
    for attempt in range(tries):
        try:
            return ast.parse(source)
        except SystemError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")
