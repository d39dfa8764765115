"""BERT-large (L=24, H=1024, A=16, 340M params), the paper's recipe. On GPUs shard
params and optimizer state with --config.mesh.fsdp=N, or use --config.grad_accum_steps, to fit memory.

Phase 1 (128 tokens, steps 0-900k), then phase 2 (512 tokens, to 1M) in the same work directory:

    python -m bert.pretrain --config experiments/pretrain/large.py --workdir runs/large \
        --config.data.train_files='corpus/*.txt' --config.data.eval_files='heldout/*.txt'
    python -m bert.pretrain --config experiments/pretrain/large.py:512 --workdir runs/large \
        --config.data.train_files='corpus/*.txt' --config.data.eval_files='heldout/*.txt'
"""
from ml_collections import ConfigDict

from bert.config import paper_recipe


def get_config(phase: str = "128") -> ConfigDict:
    return paper_recipe("large", phase)
