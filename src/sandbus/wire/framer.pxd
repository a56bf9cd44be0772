# No declarations: the framer is compiled as it is (setup.py compiles each
# module that has a .pxd); bench/README.md, "The compiled build", has the gain.
