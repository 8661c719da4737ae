"""Benchmarks: the pipeline against its baseline, scale in virtual time, scale across processes."""
