"""Fixtures for the integration tests: a private bus per test (``bus``),
one per module (``module_bus``), and a factory for buses with a custom XML
configuration (``bus_factory``).

The daemon is ``$SANDBUS_TEST_DAEMON`` (default ``sandbus-daemon``)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from itutil import (  # noqa: E402
    DAEMON,
    DaemonBus,
    env_for,  # noqa: F401  (re-exported for tests)
    write_config,
)


def pytest_report_header(config):
    return f"integration daemon under test: {DAEMON}"


def pytest_collection_modifyitems(config, items):
    # Integration tests are quick; a hang should fail fast, not after 120 s.
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(30))


def _start(workdir, **kw) -> DaemonBus:
    try:
        return DaemonBus(workdir, **kw)
    except AssertionError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def bus(tmp_path):
    """A fresh bus (session configuration) for one test. Teardown sends
    SIGTERM and asserts exit within 5 s, exit status 0 and the socket file
    removed (all of which dbus-daemon does)."""
    b = _start(tmp_path / "bus0")
    try:
        yield b
    finally:
        b.stop(check=True)


@pytest.fixture(scope="module")
def module_bus(tmp_path_factory):
    """A bus shared by the tests of one module (for read-only tests)."""
    b = _start(tmp_path_factory.mktemp("modbus"))
    try:
        yield b
    finally:
        b.stop(check=True)


@pytest.fixture
def bus_factory(tmp_path):
    """``bus_factory(extra_xml="", full_xml=None, args=())`` starts a bus with
    its own config file (--config-file=). ``extra_xml`` is inserted into a
    minimal permissive session config (e.g. ``<limit .../>``)."""
    started = []

    def factory(extra_xml: str = "", full_xml=None, args=(), check_stop=True):
        n = len(started)
        workdir = tmp_path / f"cbus{n}"
        workdir.mkdir()
        conf = write_config(workdir / "bus.conf", extra_xml, full_xml)
        b = _start(workdir, config_file=conf, extra_args=args)
        started.append((b, check_stop))
        return b

    try:
        yield factory
    finally:
        for b, check in started:
            b.stop(check=check)
