"""The optional compiled build (pyproject.toml holds everything else).

Each module of the package that has a ``.pxd`` file beside its ``.py`` is
compiled by Cython from that same ``.py``: the augmenting ``.pxd`` turns its
classes into extension types and types a few hot methods, and the ``.py``
stays the one source of both builds.  The compiled build is an optimisation
only, so it must never cost an install: without Cython or a C compiler, or
when any module fails to build, the package installs as pure Python (all of
it: the compiled modules cimport each other's types, so a half-compiled
package would not import).  An editable install is pure Python too, and
``SANDBUS_PURE=1`` forces it.
"""

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = "src"


def hot_modules():
    """Dotted names of the modules that have a .pxd beside their .py."""
    names = []
    for pxd in sorted(glob.glob(os.path.join(SRC, "sandbus", "**", "*.pxd"), recursive=True)):
        if os.path.exists(pxd[:-4] + ".py"):
            names.append(os.path.relpath(pxd[:-4], SRC).replace(os.sep, "."))
    return names


def pure_requested():
    return os.environ.get("SANDBUS_PURE", "") not in ("", "0")


class OptionalBuildExt(build_ext):
    """Cythonize and compile; on any failure build nothing, and say so."""

    def run(self):
        if self.editable_mode:
            # An editable install would put the compiled modules into src/,
            # where they would hide every later edit of their .py files.
            return self._give_up("an editable install is pure Python")
        try:
            from Cython.Build import cythonize
        except ImportError:
            return self._give_up("Cython is not installed")
        try:
            compiled = cythonize(
                self.extensions,
                include_path=[SRC],
                build_dir=os.path.join("build", "cython"),
                language_level=3,
                # The annotations (data: bytes, ...) document; they must not
                # become checks: a large message arrives as a bytearray.
                compiler_directives={"annotation_typing": False},
                quiet=True,
            )
            # cythonize hands back distutils Extensions; keep setuptools' own
            sources = {ext.name: ext.sources for ext in compiled}
            for ext in self.extensions:
                ext.sources = sources[ext.name]
            super().run()
        except Exception as e:   # CompileError, LinkError, Cython's errors, no compiler
            self._give_up("%s: %s" % (type(e).__name__, e))

    def _give_up(self, why):
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.unlink(path)
        self.extensions = []
        sys.stderr.write("sandbus: not building the compiled modules (%s); "
                         "installing pure Python\n" % why)


ext_modules = []
if not pure_requested():
    ext_modules = [Extension(name, [os.path.join(SRC, *name.split(".")) + ".py"])
                   for name in hot_modules()]

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
