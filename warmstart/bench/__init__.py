"""Benchmarks behind `warmstart bench NAME`: each module has `main(argv) -> int`, prints a table and writes JSON."""
