"""The data stage: raw text → documents → NSP pairs → masks → stored examples → batches.

One module per step (corpus, instances, packing, masking, records, pipeline). The training code
needs three calls:

    tokenizer, prepared = bert.data.build(config, workdir)
    batches = bert.data.train_batches(prepared, batch_size_per_host=..., seed=config.seed,
                                      start_step=step, process_index=..., process_count=...)
    eval_set = bert.data.eval_batches(prepared, batch_size_per_host=..., seed=config.seed)
"""

from typing import Any

from bert.data.corpus import DataError
from bert.data.masking import MaskingConfig
from bert.data.records import PreparedData, build, prepare_pretraining_data

# The pipeline imports grain (about 1.5 s); preparation worker processes import this package
# but never batch, so the pipeline's names load on first use.
_PIPELINE_NAMES = ("BATCH_KEYS", "PACKING_KEYS", "eval_batches", "per_host_batch_size",
                   "train_batches", "unigram_baseline")

__all__ = ["DataError", "MaskingConfig", "PreparedData", "build", "prepare_pretraining_data",
           *_PIPELINE_NAMES]


def __getattr__(name: str) -> Any:
    if name in _PIPELINE_NAMES:
        from bert.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'bert.data' has no attribute {name!r}")
