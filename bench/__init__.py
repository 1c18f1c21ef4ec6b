"""Benchmarks of comfy-serverless, each beside its baseline: ``python -m bench`` from the repository root (see README).

The UI workflow builders, the test server and the S3 server come from the test suite's
package (``tests.support``), importable because ``python -m`` puts the current directory first
on the import path.
"""
