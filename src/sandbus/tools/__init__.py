"""Command-line tools for people looking at a running bus: `sandbus status`
and `sandbus monitor` (cli.py dispatches to them)."""
