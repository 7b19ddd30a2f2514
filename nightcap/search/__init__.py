"""Finding a pod's capacity: the saturation search, the knee, its confirmation on fresh windows, warm starts.

- `levels.py`          what is measured: windows (`Measured`, `Point`), levels, `SearchParams`, `SearchResult`,
                       when one window settles a level, and the `LevelBook` of one search's levels.
- `knee.py`            the plateau of the good levels, the knee (fewest users on it) and where between doubling
                       levels it lies, and `plateau_users`: where the pod's figure is measured.
- `saturation.py`      `find_saturation` (double, bisect, walk past the knee to the SLO capacity) and
                       `extend_to_slo` (from a knee already known).
- `confirm.py`         the chosen level measured again on fresh windows: the figure a stage reports.
- `warm_start.py`      verify last night's knee with a few levels instead of searching from one user.
- `warm_start_tune.py` the same for the fine-tune stage's pod size.

Pure: everything takes a `measure(users)` callable; nothing here imports Prefect, Locust or Kubernetes.
Depends on: config, analysis (confidence, slo), results-free; used by tasks, flows and the benchmarks.
"""
