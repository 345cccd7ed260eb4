"""Benchmarks: our figure beside a baseline's, measured in the same run.  Not tests."""
