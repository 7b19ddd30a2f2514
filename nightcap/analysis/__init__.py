"""Pure capacity analysis: saturation, tuning choice, USL fit, sizing, HPA model, autoscale timings and plan (the pod
shape that fits, the backlog arithmetic: autoscale_plan.py), regression
against earlier nights and change points in their series, the platform canary's figure (canary.py)."""
