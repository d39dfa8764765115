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

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "squad_v1"
    c.max_seq_len = 384
    c.doc_stride = 128
    c.max_query_length = 64
    c.n_best_size = 20
    c.max_answer_length = 30
    c.learning_rate = 5e-5
    c.num_train_epochs = 3.0
    c.batch_size = 32
    return c
