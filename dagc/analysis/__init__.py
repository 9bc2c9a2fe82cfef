"""Analyses over the device DAG: cost models, the critical path, per-GPU figures."""
