"""Lineside's four services; each runs as ``python -m services.<name>`` and imports no other service."""
