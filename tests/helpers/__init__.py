"""Plain helpers the test modules share (no fixtures: those are in tests/conftest.py)."""
