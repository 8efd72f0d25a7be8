"""The package's one error family: every failure a user can cause is a ForgingError.

Binaries print the message on one line and exit nonzero; anything else escaping is a bug.
"""


class ForgingError(Exception):
  """Base class: a clear, one-line message that says what to do."""


class DatasetError(ForgingError):
  """A dataset could not be found, read or verified."""


class PlatformError(ForgingError):
  """A platform setting could not be applied in this process."""


class TraceError(ForgingError):
  """A trace is missing, malformed, tampered with or does not fit the request."""


class ConfigError(ForgingError):
  """Arguments that contradict each other or are out of range."""
