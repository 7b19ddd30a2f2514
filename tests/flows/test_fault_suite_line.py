"""The fault suite's closing line claims only what passed."""

from __future__ import annotations

from conftest import fault_suite_line


def test_the_line_counts_passed_tests_only() -> None:
    line = fault_suite_line({"passed": 9, "injected": 10, "failed": 0, "left_something": 0})
    assert line == ("fault suite: 9 test(s) passed with 10 faults injected: every run left nothing behind and lost "
                    "no step")
    failed = fault_suite_line({"passed": 7, "injected": 8, "failed": 2, "left_something": 1})
    assert failed.startswith("fault suite: 7 test(s) passed with 8 faults injected")
    assert failed.endswith("; 2 test(s) FAILED, not counted (1 of them left something behind)")
