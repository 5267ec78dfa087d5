"""The one exception every decoder raises on a bad buffer."""


class MessageError(ValueError):
    """A buffer is not a valid mpicomp message (truncated, oversized, wrong codec, corrupt).

    ``index`` is the position of the bad message in a batch (``Compressor.decode_sum``), else None.
    """

    def __init__(self, text: str, index: int | None = None) -> None:
        super().__init__(text)
        self.index = index
