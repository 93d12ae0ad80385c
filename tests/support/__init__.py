"""Test support: servers, fault harness and hostile inputs (not part of the package)."""
