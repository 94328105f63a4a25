"""Shared pieces of the reliability suite (`make test-reliability`): every test here is marked `reliability`."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fem_cache")


@pytest.fixture(scope="session")
def reference(tmp_path_factory, cache_dir) -> Path:
    """One uninterrupted 2-round run (``runs.train``) that every kill, disk-full and concurrency case must equal."""
    from runs import train

    out = tmp_path_factory.mktemp("reference") / "run"
    result = train(out, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return out
