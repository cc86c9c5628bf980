"""Retriever service: embeds chunks, owns the index, answers searches."""
