"""Benchmarks: each prints its figures beside the floor measured in the same run."""
