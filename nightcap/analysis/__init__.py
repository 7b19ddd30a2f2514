"""Pure capacity analysis: saturation, tuning choice, USL fit, sizing, HPA model, autoscale timings and plan (the pod
shape that fits, the backlog arithmetic: autoscale_plan.py), the nightly alarm (regression.py: one decision per
night; alarm.py: its statistics; regression_nights.py: what a stored night contributes; regression_result.py: what
it answers), change points in hindsight for the history view (change_points.py), the platform canary's figure
(canary.py)."""
