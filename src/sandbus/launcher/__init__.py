"""`sandbus run`: an app in a bubblewrap sandbox on its own container
instance socket (run.py), its options (options.py) and sandbox (sandbox.py)."""
