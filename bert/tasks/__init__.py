"""Fine-tuning task families: one module each owns its reader, featurizer, loss sums and metrics."""


class TaskDataError(ValueError):
    """A task's data file is malformed; the message names the file, line and field."""
