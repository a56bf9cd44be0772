"""The two builds of one source: pure Python, and the hot modules compiled
by Cython from the same .py files (setup.py, the .pxd files beside them).
scripts/test runs the whole suite once in each; these tests keep the build
machinery honest in either."""

import asyncio
import glob
import os
import re
import subprocess
import sys

import pytest

import sandbus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")


def _pxd_files():
    return sorted(glob.glob(os.path.join(SRC, "sandbus", "**", "*.pxd"), recursive=True))


def test_hot_modules_are_the_modules_with_a_pxd():
    """setup.py compiles each module with a .pxd; sandbus.build() and the
    run-time SANDBUS_PURE switch go by HOT_MODULES: one list, two spellings."""
    with_pxd = {os.path.relpath(p[:-4], os.path.join(SRC, "sandbus")).replace(os.sep, ".")
                for p in _pxd_files()}
    assert with_pxd == set(sandbus.HOT_MODULES)
    for name in with_pxd:
        assert os.path.exists(os.path.join(SRC, "sandbus", *name.split(".")) + ".py")


def _pxd_fields():
    """{class name: set of fields} declared in the .pxd files."""
    fields = {}
    for path in _pxd_files():
        cls = None
        with open(path) as f:
            for line in f:
                m = re.match(r"cdef class (\w+)", line)
                if m:
                    cls = m.group(1)
                    fields[cls] = set()
                    continue
                m = re.match(r"\s+cdef (?:public )?\w+ (.+)$", line)
                if m and cls and "(" not in line:
                    fields[cls].update(n.strip() for n in m.group(1).split(","))
    return fields


def test_pxd_declares_every_field():
    """A .pxd lists its class's fields; one added to the Python class and not
    there would break only the compiled build, so keep the two in step."""
    from sandbus.core.bus import Bus, BusSettings
    from sandbus.core.peer import Peer
    from sandbus.io.connection import Connection
    from sandbus.io.server import Server
    from sandbus.wire.message import Message

    declared = _pxd_fields()
    assert set(declared) == {"Message", "Peer", "Bus", "Connection", "Server"}
    if sandbus.build() == "pure Python":
        assert declared["Message"] == set(Message.__slots__)
        assert declared["Peer"] == set(Peer.__slots__)
        assert declared["Connection"] == set(Connection.__slots__)
    bus = Bus(BusSettings("0" * 32, "1" * 32))
    loop = asyncio.new_event_loop()
    try:
        server = Server(bus, loop)
        if sandbus.build() == "pure Python":
            assert declared["Bus"] == set(vars(bus))
            # daemon.py sets auth_settings after construction
            assert declared["Server"] == set(vars(server)) | {"auth_settings"}
    finally:
        loop.close()


def _probe(env_extra):
    code = ("import sandbus, importlib\n"
            "print(sandbus.build())\n"
            "for m in sandbus.HOT_MODULES:\n"
            "    print(importlib.import_module('sandbus.' + m).__file__)\n")
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout.splitlines()
    return out[0], out[1:]


def test_sandbus_pure_at_run_time_loads_every_hot_module_from_source():
    build, files = _probe({"SANDBUS_PURE": "1"})
    assert build == "pure Python"
    assert len(files) == len(sandbus.HOT_MODULES)
    assert all(f.endswith(".py") for f in files), files


def test_sandbus_pure_0_changes_nothing():
    build, _files = _probe({"SANDBUS_PURE": "0"})
    assert build == sandbus.build()


def test_this_run_tests_the_build_it_says():
    """scripts/test names the build each run is for; a stale .so in src/
    (from build_ext --inplace) would otherwise make the pure run compiled."""
    expected = os.environ.get("SANDBUS_TEST_BUILD")
    if not expected:
        pytest.skip("SANDBUS_TEST_BUILD is not set (scripts/test sets it)")
    assert sandbus.build() == {"compiled": "compiled", "pure": "pure Python"}[expected]


def _setup_build_ext(tmp_path, env_extra):
    from bench.compiled import copy_project
    work = str(tmp_path / "src-copy")
    copy_project(work)
    lib = tmp_path / "lib"
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "-b", str(lib),
                           "-t", str(tmp_path / "tmp")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=280)
    return proc, sorted(p.name for p in lib.rglob("*.so"))


@pytest.mark.timeout(300)
def test_build_without_a_c_compiler_falls_back_to_pure_python(tmp_path):
    """A build failure must never fail the install: it builds nothing and says so."""
    pytest.importorskip("Cython")
    proc, built = _setup_build_ext(tmp_path, {"CC": "false", "SANDBUS_PURE": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installing pure Python" in proc.stderr
    assert built == []


def test_sandbus_pure_at_install_builds_nothing(tmp_path):
    proc, built = _setup_build_ext(tmp_path, {"SANDBUS_PURE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not building the compiled modules" not in proc.stderr
    assert built == []


def test_an_editable_install_builds_nothing(tmp_path):
    """An editable build would put the compiled modules into src/, where
    they would hide later edits of the .py files (and make the pure runs
    compiled); setup.py builds none there."""
    from bench.compiled import copy_project
    work = tmp_path / "src-copy"
    copy_project(str(work))
    code = ("from setuptools import distutils\n"
            "from distutils.core import run_setup\n"
            "dist = run_setup('setup.py', ['build_ext'], stop_after='init')\n"
            "cmd = dist.get_command_obj('build_ext')\n"
            "cmd.editable_mode = True\n"
            "cmd.ensure_finalized()\n"
            "cmd.run()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                          env=dict(os.environ, SANDBUS_PURE=""), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "an editable install is pure Python" in proc.stderr
    assert list(work.rglob("*.so")) == [] and list(work.rglob("*.c")) == []
