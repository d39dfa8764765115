"""SQuAD v2.0 (unanswerable questions too), the paper's recipe: v1.1's settings for 2 epochs at
batch 48; [CLS] is the null answer, predicted when its score beats the best span's by more than
null_score_diff_threshold. Scores as the official v2.0 script (exact, f1, HasAns_*, NoAns_*,
best_f1 and best_f1_thresh from the null odds).

    python -m bert.finetune --config experiments/finetune/squad_v2.py --workdir runs/squad_v2 \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=train-v2.0.json \\
        --config.eval_file=dev-v2.0.json

Writes eval_predictions.json ({id: answer}) and eval_predictions.null_odds.json.
"""
from ml_collections import ConfigDict

from bert.config import squad_config


def get_config() -> ConfigDict:
    return squad_config("squad_v2")
