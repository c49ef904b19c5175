"""Shared fixtures: the package path, the two clients, a per-test harness.

The suite needs no installation: the package directory is put first on
sys.path here and on PYTHONPATH for every script the tests start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = TESTS_DIR.parent  # python/
REPO_ROOT = PACKAGE_ROOT.parent
sys.path.insert(0, str(PACKAGE_ROOT))
sys.path.insert(0, str(TESTS_DIR))

from harness import C_CLIENT, Harness  # noqa: E402

# What a shell gives the commands it runs in the foreground: SIGINT and
# SIGQUIT at their default, also when this run was started in the
# background of a non-interactive shell (which ignores both for its
# background jobs); the processes the tests start inherit them.
import signal  # noqa: E402

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
OUR_CLIENT = os.environ.get("PREFORK_INTERP_CLIENT") or str(REPO_ROOT / "target" / "release" / "prefork-interp")

CLIENTS = {"c": C_CLIENT, "ours": OUR_CLIENT}


def client_path(name: str) -> str:
    """The named client's path; fails the test if it is not there."""
    path = CLIENTS[name]
    if not os.access(path, os.X_OK):
        hint = (
            "install chiark-utils-bin"
            if name == "c"
            else "build it with `cargo build --release` in the repository, or set PREFORK_INTERP_CLIENT"
        )
        pytest.fail(f"prefork-interp client {path} ({name}) is not there: {hint}", pytrace=False)
    return path


@pytest.fixture(params=sorted(CLIENTS))
def client(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once with the C client and once with ours."""
    return client_path(request.param)


@pytest.fixture
def harness(client: str, tmp_path: Path):
    """A private directory, scripts in it, calls through ``client``, and
    every server and process the test started stopped afterwards."""
    h = Harness(client, tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture
def our_harness(tmp_path: Path):
    """As ``harness``, for tests of features only our client has."""
    h = Harness(client_path("ours"), tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture
def c_harness(tmp_path: Path):
    """As ``harness``, for tests of the C client (protocol v1) only."""
    h = Harness(client_path("c"), tmp_path)
    try:
        yield h
    finally:
        h.cleanup()
