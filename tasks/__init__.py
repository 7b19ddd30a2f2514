"""The Prefect tasks the flows call: what shows as a task run in the UI.

- `platform.py`   deploy and teardown.
- `measure.py`    one measured window (`measure-window`) and the search that drives it (warm or cold).
- `canary.py`     the platform canary, measured before the model is deployed (`platform-canary`).
- `artifacts.py`  the progress bar, the steps table, the summary, the report-folder link and the trend table.
- `events.py`     the Prefect events a finished run emits (built by `nightcap.results.events`).
- `mlflow_publication.py` the night on the model's MLflow version and experiment (`nightcap.results.publish_mlflow`).
- `pushgateway.py` tonight's metrics pushed to `publish.pushgateway` (samples: `nightcap.results.metrics_samples`).
"""
