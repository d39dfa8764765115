"""The data stage: raw text → documents → NSP pairs → masks → stored examples → batches.

One module per step (corpus, instances, masking, records, pipeline). The training code needs
three calls:

    tokenizer, prepared = bert.data.build(config, workdir)
    batches = bert.data.train_batches(prepared, batch_size_per_host=..., seed=config.seed,
                                      start_step=step, process_index=..., process_count=...)
    eval_set = bert.data.eval_batches(prepared, batch_size_per_host=..., seed=config.seed)
"""

from bert.data.corpus import DataError
from bert.data.masking import MaskingConfig
from bert.data.pipeline import BATCH_KEYS, eval_batches, per_host_batch_size, train_batches
from bert.data.records import PreparedData, build, prepare_pretraining_data

__all__ = ["BATCH_KEYS", "DataError", "MaskingConfig", "PreparedData", "build",
           "eval_batches", "per_host_batch_size", "prepare_pretraining_data", "train_batches"]
