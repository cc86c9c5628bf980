"""The project's root exception and its families."""

from __future__ import annotations


class LinesideError(Exception):
    """Root of every error Lineside raises on purpose; the message says what to do."""


class ConfigError(LinesideError):
    """A setting is missing or wrong."""


class ModelError(LinesideError):
    """A model file is missing, corrupt or of the wrong kind."""


class BrokerError(LinesideError):
    """The MQTT broker cannot be reached or started."""


class DocumentError(LinesideError):
    """A document cannot be read; ``doc`` names it."""

    def __init__(self, doc: str, reason: str) -> None:
        super().__init__(f"{doc}: {reason}")
        self.doc = doc
        self.reason = reason
