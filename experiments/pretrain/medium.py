"""BERT-medium (L=8, H=512, A=8), the paper's recipe at a small size.

Phase 1 (128 tokens, steps 0-900k), then phase 2 (512 tokens, to 1M) in the same work directory:

    python -m bert.pretrain --config experiments/pretrain/medium.py --workdir runs/medium \
        --config.data.train_files='corpus/*.txt' --config.data.eval_files='heldout/*.txt'
    python -m bert.pretrain --config experiments/pretrain/medium.py:512 --workdir runs/medium \
        --config.data.train_files='corpus/*.txt' --config.data.eval_files='heldout/*.txt'
"""
from ml_collections import ConfigDict

from bert.config import paper_recipe


def get_config(phase: str = "128") -> ConfigDict:
    return paper_recipe("medium", phase)
