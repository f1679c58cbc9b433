"""Test-session setup: never touch the network, keep Hub downloads in a private cache.

`huggingface_hub` reads these variables when it is first imported, so they are set before any
test module imports it.
"""
import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
_HUB_CACHE = tempfile.mkdtemp(prefix="c2fmae-test-hub-cache-")
os.environ["HF_HUB_CACHE"] = _HUB_CACHE

import pytest  # noqa: E402

import c2fmae  # noqa: E402,F401  (registers the timm models)


@pytest.fixture(scope="session")
def hub_cache() -> Path:
    """The Hugging Face Hub cache directory this test session uses (empty at start)."""
    return Path(_HUB_CACHE)
