"""Pure capacity analysis: numbers, step rows and frames in, figures and verdicts out (no Prefect, Locust or
Kubernetes: tests/test_layering.py), so every rule here is tested in milliseconds.

- `slo.py`                 what "meets the SLO" means (p95 ≤ SLO, errors ≤ the max), the one rule every check uses.
- `saturation.py`          which steps count for capacity (usable, within the SLO), steps as a frame, p95 at a rate.
- `confidence.py`          intervals: batch means in a window, fresh windows of a figure, paired ratios.
- `latency.py`             percentiles from pooled latency histograms, with their interval.
- `pod_capacity.py`        one pod, one number: the confirmed figure per pod shape and what later stages found.
- `paired.py`              figures from paired windows: scaling efficiency, the multi-client gain.
- `operating_point.py`     the operating rate verified open loop, and the back-off to the rate that meets the SLO.
- `tuning.py`              each pod size judged from its windows, and the choice.
- `tune_planner.py`        which pod size to measure next, without walking the whole grid.
- `usl.py`                 the Universal Scalability Law fitted to throughput per pod count or users.
- `sizing.py`              from per-pod rates to pods, cores, nodes and cost; SLO users per core count.
- `hpa.py`                 the HorizontalPodAutoscaler's algorithm, for the local platform.
- `autoscale_plan.py`      the pod shape an autoscale stage fits and what it should then see (backlog arithmetic).
- `autoscale_load.py`      the autoscale stage's phases (open-loop rates) and what each got back.
- `autoscale_metrics.py`   timings of an autoscaling run from its sampled timeline.
- `figures.py`             the headline figures: names, units, which way is better, which the alarm compares.
- `regression.py`          the nightly alarm: one decision per night over every compared figure.
- `alarm.py`               its statistics (prediction intervals on the baseline nights, in log units).
- `regression_nights.py`   what a stored night contributes to the alarm (baseline or not, intervals, level changes).
- `regression_result.py`   what the alarm answers: a verdict per figure, the night's result, the labels.
- `change_points.py`       where a nightly series changed level, in hindsight (history view, trend plot).
- `canary.py`              the platform canary's figure: a fixed workload that tells a slower machine apart.

Depends on: config (sections), quantities, steps (StepRow). Never on search, results or anything above.
"""
