"""Benchmarks: each measures against a baseline in the same run and reports ratios."""
