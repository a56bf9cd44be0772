# No declarations: the body validator is compiled as it is (setup.py compiles
# each module that has a .pxd); bench/README.md, "The compiled build", has the gain.
