# No declarations: the body validator is compiled as it is (setup.py compiles
# each module that has a .pxd).  That alone takes about 4k of the 72k
# instructions of a sequential call (bench/README.md, "The compiled build").
