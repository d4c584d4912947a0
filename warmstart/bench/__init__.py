"""Benchmarks behind `warmstart bench NAME`: each measures a target against a baseline in the same run."""
