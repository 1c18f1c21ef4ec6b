"""Benchmarks of comfy-serverless, each beside its baseline: ``python -m bench`` (see README).

The UI workflow builders, the test server and the S3 server fixture live in tests/, which
is put on the import path here, before any benchmark module imports them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
