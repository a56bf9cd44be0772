"""sandbus: a D-Bus message bus with container instances."""
import os
import sys

__version__ = "0.1.0"

# The modules that the compiled build compiles with Cython (setup.py: each
# has a .pxd beside its .py; tests/test_build.py keeps the two lists equal).
HOT_MODULES = ("core.bus", "core.peer", "io.connection", "io.server",
               "proxy.backend", "proxy.filter", "proxy.stream", "proxy.view",
               "wire.framer", "wire.message", "wire.validate")


class _SourceFirst:
    """Meta path finder that loads the hot modules from their .py even when
    a compiled extension module sits beside them (SANDBUS_PURE=1 at run
    time).  It takes all of them or none: the compiled ones cimport each
    other's types, so a mix would not import."""

    names = frozenset(__name__ + "." + m for m in HOT_MODULES)

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in cls.names or not path:
            return None
        from importlib.util import spec_from_file_location
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            source = os.path.join(entry, leaf)
            if os.path.isfile(source):
                return spec_from_file_location(fullname, source)
        return None


if os.environ.get("SANDBUS_PURE", "") not in ("", "0"):
    sys.meta_path.insert(0, _SourceFirst)


def build() -> str:
    """Which build runs: "compiled" (the hot modules are Cython extension
    modules) or "pure Python"."""
    from importlib import import_module
    from importlib.machinery import EXTENSION_SUFFIXES
    compiled = [m for m in HOT_MODULES
                if import_module(__name__ + "." + m).__file__.endswith(tuple(EXTENSION_SUFFIXES))]
    if not compiled:
        return "pure Python"
    if len(compiled) == len(HOT_MODULES):
        return "compiled"
    return "partly compiled (%s)" % ", ".join(compiled)
