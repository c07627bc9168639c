"""Real-browser tests of the GUI; a package so its conftest never shadows tests/conftest.py."""
