# Compiled by Cython in the compiled build (setup.py); nothing to declare:
# the per-message path of the proxy back end runs as C.
