"""Errors a user can cause and fix. The CLI prints these as one line, never as a traceback."""


class RelayGenError(Exception):
    """Base class: the message alone tells the user what is wrong and what to do."""


class ConfigError(RelayGenError, ValueError):
    """Bad input caught before any model work starts (prompt, budget, cues, pair)."""


class ContextWindowError(ConfigError):
    """A prompt that leaves a model no room to write: more tokens than its context window holds."""


class ModelNotFoundError(RelayGenError, LookupError):
    """A model, pair or profile name that the registry does not know, or a file that is missing."""


class ModelFileError(RelayGenError):
    """A model file exists but cannot be loaded (truncated, corrupt, or not a model file at all)."""


class FetchError(RelayGenError):
    """A model file could not be fetched or failed verification."""


class ServerError(RelayGenError):
    """A model server could not be reached, or answered with an error (the message names its URL)."""


class QueueTimeoutError(RelayGenError, TimeoutError):
    """Every sequence of an engine stayed busy for longer than a request may wait for one."""


class Cancelled(RelayGenError):
    """The request was cancelled (its client went away): it stops at its next model step."""
