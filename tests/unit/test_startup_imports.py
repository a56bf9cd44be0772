"""What the start-up paths of `sandbus run` and sandbus-dbus-proxy import:
none of the modules that only some paths need (the daemon's logging,
typing, urllib.parse for %-escapes, shlex for --learn, asyncio for the
proxy back end), which bench/run_startup.py shows to cost start-up time.
Checked in a fresh interpreter without site (-S), so that only what
sandbus itself imports counts."""

import os
import subprocess
import sys

import sandbus

SRC = os.path.dirname(os.path.dirname(os.path.abspath(sandbus.__file__)))
NEVER = ("logging", "typing", "urllib.parse", "ipaddress", "shlex", "asyncio", "argparse", "xml.etree.ElementTree")


def imported_by(code: str) -> set:
    """The modules in NEVER that running code loads."""
    probe = (f"import sys\nsys.path.insert(0, {SRC!r})\n{code}\n"
             f"print(' '.join(m for m in {NEVER!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True)
    return set(r.stdout.split())


def test_the_launcher_imports_none_of_them():
    assert imported_by("import sandbus.cli, sandbus.launcher.run") == set()


def test_the_proxy_imports_none_of_them():
    assert imported_by("import sandbus.proxy.main") == set()


def test_a_plain_address_needs_no_urllib():
    assert imported_by("from sandbus.wire.address import parse_addresses\n"
                       "assert parse_addresses('unix:path=/run/user/1000/bus,guid=00') == "
                       "[('unix', {'path': '/run/user/1000/bus', 'guid': '00'})]") == set()


def test_the_probe_sees_what_is_imported():
    # the daemon's path does import logging: the probe would see a regression
    assert "logging" in imported_by("import sandbus.cli\nsandbus.cli._setup_logging()")
    assert "urllib.parse" in imported_by("from sandbus.wire.address import parse_addresses\n"
                                         "assert parse_addresses('unix:path=/a%2cb') == [('unix', {'path': '/a,b'})]")
