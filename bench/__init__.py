"""Benchmarks of comfy-serverless, each beside its baseline: ``python -m bench`` (see README)."""
