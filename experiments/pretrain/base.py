"""BERT-base (L=12, H=768, A=12, 110M params), the paper's recipe.

Phase 1 (128 tokens, steps 0-900k), then phase 2 (512 tokens, to 1M) in the same work directory:

    python -m bert.pretrain --config experiments/pretrain/base.py --workdir runs/base \
        --config.data.train_files='corpus/*.txt' --config.data.eval_files='heldout/*.txt'
    python -m bert.pretrain --config experiments/pretrain/base.py:512 --workdir runs/base \
        --config.data.train_files='corpus/*.txt' --config.data.eval_files='heldout/*.txt'
"""
from ml_collections import ConfigDict

from bert.config import paper_recipe


def get_config(phase: str = "128") -> ConfigDict:
    return paper_recipe("base", phase)
