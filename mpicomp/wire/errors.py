"""The one exception every decoder raises on a bad buffer."""


class MessageError(ValueError):
    """A buffer is not a valid mpicomp message (truncated, oversized, wrong codec, corrupt)."""
