"""Ingest service: turns documents into chunks with exact provenance."""
