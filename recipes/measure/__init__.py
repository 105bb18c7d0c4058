"""Measurement: evaluation, latency, the per-format host runners, the report."""
