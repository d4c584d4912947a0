"""The benchmarks behind `warmstart bench NAME`: each module here with a `main(argv)` is one."""
