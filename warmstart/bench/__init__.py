"""Benchmarks behind `warmstart bench NAME`: each is a module here with `main(argv) -> int` that prints a
table and writes JSON with --json, measuring ratios against a baseline taken in the same run."""
