"""SQuAD v1.1 span question answering, the paper's recipe (exact_match / f1, 0-100, as the
official evaluation script scores them).

    python -m bert.finetune --config experiments/finetune/squad_v1.py --workdir runs/squad_v1 \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=train-v1.1.json \\
        --config.eval_file=dev-v1.1.json

384 tokens, context windows starting 128 tokens apart, questions cut to 64 tokens, 20 n-best
starts and ends per window, answers of at most 30 tokens; 3 epochs at 5e-5, batch 32.
eval_predictions.json is the official {id: answer} file.
"""
from ml_collections import ConfigDict

from bert.config import squad_config


def get_config() -> ConfigDict:
    return squad_config("squad_v1")
