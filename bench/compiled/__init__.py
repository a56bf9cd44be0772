"""The smallest compiled piece, as an experiment the benchmark can run.

sandbus ships as pure Python.  This package builds a *copy* of it in which
five hot modules (wire/message, core/peer, core/bus, io/connection,
io/server) are compiled by Cython, steered only by the augmenting ``.pxd``
files in ``pxd/``: they turn Message, Peer, Bus, Connection and Server into
extension types and type a few hot methods' arguments.  No ``.py`` file is
changed, so the pure-Python path is the same code.

``python -m bench --systems dbus-daemon,dbus-broker,sandbus,sandbus-compiled``
measures the copy side by side with the rest.  The build needs Cython and a
C compiler (``pip install cython``); without them the system is skipped.
Builds are cached under ``bench/results/compiled/`` by a hash of the sources.
"""

import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PXD_DIR = os.path.join(HERE, "pxd")
CACHE_DIR = os.path.join(os.path.dirname(HERE), "results", "compiled")

# Module paths relative to the sandbus package; each has a .pxd in pxd/.
MODULES = ("wire/message", "core/peer", "core/bus", "io/connection", "io/server")


class BuildError(Exception):
    pass


def package_dir():
    """The sandbus package that is installed (the one the pure system runs)."""
    import sandbus
    return os.path.dirname(os.path.abspath(sandbus.__file__))


def _source_hash(pkg):
    h = hashlib.sha256()
    for root in (pkg, PXD_DIR):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith((".py", ".pxd")):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, root).encode())
                    with open(path, "rb") as f:
                        h.update(f.read())
    return h.hexdigest()[:16]


def build(log=None):
    """Return a directory to put first on sys.path so that ``import sandbus``
    gets the compiled copy; build it if the cache has none for these sources."""
    try:
        import Cython  # noqa: F401
    except ImportError:
        raise BuildError("Cython is not installed (pip install cython)")
    pkg = package_dir()
    tree = os.path.join(CACHE_DIR, _source_hash(pkg))
    marker = os.path.join(tree, "BUILT")
    if os.path.exists(marker):
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    target = os.path.join(tree, "sandbus")
    shutil.copytree(pkg, target, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    for mod in MODULES:
        shutil.copy(os.path.join(PXD_DIR, mod + ".pxd"), os.path.join(target, mod + ".pxd"))
    # annotation_typing=False: the .py annotations (data: bytes, ...) are
    # documentation, and a large message arrives as a bytearray.
    cmd = [sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-j", str(os.cpu_count() or 1),
           "-X", "language_level=3", "-X", "annotation_typing=False",
           *[mod + ".py" for mod in MODULES]]
    proc = subprocess.run(cmd, cwd=target, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = proc.stdout.decode(errors="replace")[-2000:]
        shutil.rmtree(tree, ignore_errors=True)
        raise BuildError("cythonize failed:\n" + tail)
    if log:
        log(proc.stdout.decode(errors="replace")[-500:])
    shutil.rmtree(os.path.join(target, "build"), ignore_errors=True)
    with open(marker, "w") as f:
        f.write(" ".join(MODULES) + "\n")
    return tree


LAUNCHER = """import importlib, sys
sys.path.insert(0, sys.argv.pop(1))
for name in %r:
    mod = importlib.import_module("sandbus." + name.replace("/", "."))
    if not mod.__file__.endswith(".so"):
        sys.exit("sandbus-compiled: %%s was not compiled (%%s)" %% (name, mod.__file__))
from sandbus.cli import daemon_main
sys.exit(daemon_main())
""" % (MODULES,)


def daemon_argv(tree):
    """Command line prefix that runs sandbus-daemon from the compiled copy."""
    return [sys.executable, "-c", LAUNCHER, tree]
