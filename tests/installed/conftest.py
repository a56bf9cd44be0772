"""Makes dbus_installed importable for test_dbus_installed.py (the table
itself is in tests/conftest.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
