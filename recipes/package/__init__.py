"""Packaging: generated stubs, the bundle and its archive."""
