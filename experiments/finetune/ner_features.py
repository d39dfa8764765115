"""The paper's feature-based NER (Table 7): no encoder weight is trained; vectors of a frozen
encoder's layers feed a two-layer BiLSTM tagger (768 units per direction) trained from scratch.

    python -m bert.finetune --config experiments/finetune/ner_features.py --workdir runs/ner_features \\
        --config.init_checkpoint=MODEL_DIR --config.train_file=eng.train \\
        --config.eval_file=eng.testa --config.feature_strategy=concat_last_four

feature_strategy picks Table 7's row: embeddings, last_hidden, second_to_last_hidden,
weighted_sum_last_four, concat_last_four (the paper's best, the default) or weighted_sum_all.
Every layer's first-sub-token vectors are computed once per checkpoint and file, in bfloat16,
under config.feature_cache_dir (default DIR/feature_cache): point the runs of every strategy at
one directory and the encoder runs once for all of them.

The paper gives no optimizer for the BiLSTM. This recipe is Adam with its usual step size 1e-3
(Kingma & Ba, 2015) and epsilon 1e-8, no weight decay, clipping at 1.0, 10% warmup then linear
decay, batch 32 sentences, 5 epochs; windows as in the fine-tuning NER (128 tokens with
document context).
"""
from ml_collections import ConfigDict

from bert.config import finetuning_config


def get_config() -> ConfigDict:
    c = finetuning_config()
    c.task = "ner_features"
    c.feature_strategy = "concat_last_four"
    c.lstm_size = 768  # per direction, as in the paper
    c.document_context = True  # the encoder sees the sentence's document, as in the paper's NER

    # Optimizer of the BiLSTM (not the paper's: see the docstring).
    c.learning_rate = 1e-3
    c.num_train_epochs = 5.0
    c.weight_decay = 0.0
    c.optim.eps = 1e-8
    return c
