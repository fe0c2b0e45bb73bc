"""Fixtures of the data tests (helpers live in data_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import BCCD


@pytest.fixture
def bccd_root() -> Path:
    if not (BCCD / "Annotations").is_dir():
        pytest.skip("../shared/data/BCCD is not present")
    return BCCD.resolve()
