"""Benchmarks that print numbers (run one with ``python -m benchmarks.<name>``)."""
