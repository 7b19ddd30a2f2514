"""The Prefect tasks the flows call: what shows as a task run in the UI.

- `platform.py`   deploy and teardown.
- `measure.py`    one measured window (`measure-window`) and the search that drives it.
- `artifacts.py`  the progress bar, the steps table, the summary and the report-folder link.
"""
