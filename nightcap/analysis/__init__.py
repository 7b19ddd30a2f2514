"""Pure capacity analysis: saturation, tuning choice, USL fit, sizing, HPA model, autoscale timings, regression
against earlier nights and change points in their series, the platform canary's figure (canary.py)."""
