"""Benchmarks stage: complexity, latency and quality reports (``lightbsr.benchmarks``)."""
