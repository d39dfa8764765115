"""Data preparation as its own command, so that many processes can share it.

    python -m bert.prepare --config experiments/pretrain/<name>.py --workdir DIR \
        [--shard I --num_shards N] [--config.key=value ...] [--print_config]

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

from ml_collections import ConfigDict

from bert import cli
from bert.config import pretraining_config
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


def _checked_as_read(config: ConfigDict) -> None:
    """Nothing beyond the keys and types of the overrides (bert/cli.py): preparation reads
    config.data (bert.data checks each key as it reads it), seed, max_seq_len,
    max_predictions_per_seq and model.vocab_size, so a config holding only those will do."""


def define_flags() -> None:
    """Only when run as a command: the config flags of every command (bert/cli.py) and the
    share's."""
    cli.define_config_flags()
    flags.DEFINE_string("workdir", None, "the pretraining work directory (cache: DIR/data)")
    flags.DEFINE_integer("shard", 0, "this process's share, 0 .. num_shards - 1")
    flags.DEFINE_integer("num_shards", 1, "processes sharing the preparation")


def main(argv: list[str]) -> None:
    setup_logging()
    config = cli.config_from_flags("prepare", argv, _checked_as_read, pretraining_config)
    options = flags.FLAGS
    try:
        if not (options.workdir or config.data.cache_dir):
            raise ValueError("name --workdir (the cache goes to DIR/data) or "
                             "--config.data.cache_dir")
        share = prepare(config, options.workdir or "", shard=options.shard,
                        num_shards=options.num_shards)
    except (ValueError, OSError) as error:
        raise SystemExit(f"bert.prepare: error: {error}") from None
    json.dump(share, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
