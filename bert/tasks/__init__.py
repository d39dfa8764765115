"""Fine-tuning task families: one module each (reader, featurizer, loss, metrics, post-processing)."""


class TaskDataError(ValueError):
    """Malformed fine-tuning data; the message names the file, line or record and the field."""


class SkipCount(int):
    """How many records a reader skipped, as the original recipe does (an int), and `reason`:
    why, and where the first one is, for the error when a file yields (almost) nothing."""

    reason: str

    def __new__(cls, count: int = 0, reason: str = "") -> "SkipCount":
        skipped = super().__new__(cls, count)
        skipped.reason = reason
        return skipped
