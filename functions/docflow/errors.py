"""Errors the pipeline reasons about.

The class name is the contract: Lambda reports an unhandled exception's class name as `errorType`,
Step Functions matches Retry/Catch on it, and the embedded runner matches on the same names
(see pipeline/policy.py). Renaming one is a change to the state machine's behaviour.
"""


class DocflowError(Exception):
    """Base of the project's own errors."""


class TransientError(DocflowError):
    """Worth retrying: throttling, a timeout talking to a store, a dependency briefly unavailable."""


class PermanentError(DocflowError):
    """Retrying cannot help: the document or the configuration is wrong. Caught and recorded FAILED."""


class ConfigurationError(PermanentError):
    """A setting or a deployed resource is missing or wrong."""
