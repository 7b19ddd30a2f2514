"""Pure capacity analysis: saturation, tuning choice, USL fit, sizing, HPA model and autoscale timings."""
