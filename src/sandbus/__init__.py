"""sandbus: a D-Bus message bus with container instances."""
__version__ = "0.1.0"
