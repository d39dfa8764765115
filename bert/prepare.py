"""Data preparation as its own command, so that many processes can share it.

    python -m bert.prepare --config experiments/pretrain/<name>.py --workdir DIR \
        [--shard I --num_shards N] [--config.key=value ...]

Prepares (or finds prepared) the tokenizer and the stored examples that
`python -m bert.pretrain` with the same config and work directory will use: the cache is
config.data.cache_dir, or DIR/data. With --num_shards N, this process prepares only corpus parts
I, I + N, I + 2N, ... (bert/data/records.py), so the N tasks of a cluster array job, or the
hosts of a pod, prepare disjoint shares in parallel; the last one to finish writes the summary,
and pretraining then finds every part ready. Run it once without sharding first when the
tokenizer must be trained (config.data.tokenizer empty), so that the shares do not each train it.

Prints the share's totals (parts, documents, tokens, instances, MB of text, MB/s) as JSON.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from bert.data.records import data_tokenizer, prepare_pretraining_data
from bert.metrics import setup_logging


def prepare(config, workdir: str, *, shard: int = 0, num_shards: int = 1) -> dict:
    """This process's share of the preparation; returns its totals."""
    tokenizer, cache_dir = data_tokenizer(config, workdir)
    share = prepare_pretraining_data(config.data, config.max_seq_len,
                                     config.max_predictions_per_seq, config.seed, cache_dir,
                                     tokenizer, shard=shard, num_shards=num_shards, wait=False)
    assert isinstance(share, dict)
    return share


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    options = flags.FLAGS
    try:
        if not (options.workdir or options.config.data.cache_dir):
            raise ValueError("name --workdir (the cache goes to DIR/data) or "
                             "--config.data.cache_dir")
        share = prepare(options.config, options.workdir or "", shard=options.shard,
                        num_shards=options.num_shards)
    except (ValueError, OSError) as error:
        raise SystemExit(f"bert.prepare: error: {error}") from None
    json.dump(share, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "pretraining config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "the pretraining work directory (cache: DIR/data)")
    flags.DEFINE_integer("shard", 0, "this process's share, 0 .. num_shards - 1")
    flags.DEFINE_integer("num_shards", 1, "processes sharing the preparation")
    flags.mark_flags_as_required(["config"])
    app.run(main)
