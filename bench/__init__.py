"""Benchmarks at fleet scale (``make bench`` → ``python -m bench.run``); see bench/results/README.md."""
