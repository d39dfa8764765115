"""Fine-tuning task families: one module each (reader, featurizer, loss, metrics, post-processing)."""


class TaskDataError(ValueError):
    """Malformed fine-tuning data; the message names the file, line or record and the field."""
