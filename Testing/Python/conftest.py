"""Shared fixtures: the real dataset beside the repository (skipped when absent)."""

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MEDIAN_NERVE_DATA", REPO.parent / "shared" / "data" / "median-nerve-us"))
SPACING = 0.062  # mm, from the dataset README

# converted networks (OpenVINO) go to a scratch cache, never the user's home
os.environ.setdefault("MEDIAN_NERVE_SEG_CACHE", tempfile.mkdtemp(prefix="mns-cache-"))

needs_data = pytest.mark.skipif(not (DATA / "images").is_dir(), reason=f"dataset not found at {DATA}")


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    if not (DATA / "images").is_dir():
        pytest.skip(f"dataset not found at {DATA}")
    return DATA
