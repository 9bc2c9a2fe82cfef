"""Expansion passes from the logical IR to the device DAG, and the pass manager."""
