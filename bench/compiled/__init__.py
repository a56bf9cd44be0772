"""The shipped compiled build, for the benchmark's ``sandbus-compiled``.

``pip install .`` compiles the hot modules with Cython (setup.py, steered
by the ``.pxd`` files beside them in src/sandbus/).  When the installed
sandbus is that build, the benchmark runs it; otherwise (an editable or a
pure install) it installs the same sources once with pip into a cache
under ``bench/results/compiled/``, keyed by a hash of them, and runs that.
``SANDBUS_BENCH_COMPILED=DIR`` names a ``pip install --target DIR`` made
already.  The ``sandbus`` system runs with ``SANDBUS_PURE=1``, so the two
rows are the two builds of one source.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE_DIR = os.path.join(ROOT, "bench", "results", "compiled")
# What setup.py reads; the rest of the checkout is no part of the package.
PROJECT_FILES = ("setup.py", "pyproject.toml", "README.md")


class BuildError(Exception):
    pass


def _source_hash():
    h = hashlib.sha256()
    for name in PROJECT_FILES:
        with open(os.path.join(ROOT, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    src = os.path.join(ROOT, "src")
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith((".py", ".pxd")):
                path = os.path.join(dirpath, name)
                h.update(os.path.relpath(path, src).encode() + b"\0")
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


def copy_project(work):
    """Copy what building the package reads (no build products) to work."""
    os.makedirs(work)
    for name in PROJECT_FILES:
        shutil.copy(os.path.join(ROOT, name), work)
    shutil.copytree(os.path.join(ROOT, "src"), os.path.join(work, "src"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "*.c"))


def install(dest, env=None):
    """``pip install --target dest`` of a copy of this checkout's package
    (a copy: pip builds in the tree, and the checkout may be in use).
    Returns pip's output."""
    work = dest + ".src"
    shutil.rmtree(work, ignore_errors=True)
    copy_project(work)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-warn-script-location",
             "--disable-pip-version-check", "-v", "--target", dest, work],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise BuildError("pip install failed:\n" + out[-2000:])
    return out


def installed_is_compiled():
    import sandbus
    return sandbus.build() == "compiled"


def build(log=None):
    """Return a directory to put first on sys.path so that ``import sandbus``
    gets the compiled build (None: the installed one is compiled)."""
    given = os.environ.get("SANDBUS_BENCH_COMPILED")
    if given:       # a compiled install made already (scripts/test makes one)
        return given
    if installed_is_compiled():
        return None
    os.makedirs(CACHE_DIR, exist_ok=True)
    tree = os.path.join(CACHE_DIR, _source_hash())
    marker = os.path.join(tree, "BUILT")
    with open(os.path.join(CACHE_DIR, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # parallel test runs build it once
        if os.path.exists(marker):
            return tree
        shutil.rmtree(tree, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k != "SANDBUS_PURE"}
        out = install(tree, env)
        probe = subprocess.run([sys.executable, "-c", "import sandbus; print(sandbus.build())"],
                               env=dict(env, PYTHONPATH=tree), stdout=subprocess.PIPE, text=True)
        if probe.stdout.strip() != "compiled":
            shutil.rmtree(tree, ignore_errors=True)
            raise BuildError("the install is %r, not compiled (no C compiler?):\n%s"
                             % (probe.stdout.strip(), out[-1500:]))
        if log:
            log(out[-500:])
        with open(marker, "w") as f:
            f.write("compiled\n")
    return tree


LAUNCHER = """import sys
tree = sys.argv.pop(1)
if tree:
    sys.path.insert(0, tree)
import sandbus
if sandbus.build() != "compiled":
    sys.exit("sandbus-compiled: the build is %s (%s)" % (sandbus.build(), sandbus.__file__))
from sandbus.cli import daemon_main
sys.exit(daemon_main())
"""


def daemon_argv(tree):
    """Command line prefix that runs sandbus-daemon from the compiled build."""
    return [sys.executable, "-c", LAUNCHER, tree or ""]


def daemon_env():
    """The compiled system must not inherit a request for pure Python."""
    return {k: v for k, v in os.environ.items() if k != "SANDBUS_PURE"}
