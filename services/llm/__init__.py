"""LLM service: answers a question from retrieved passages with a local GGUF model."""
