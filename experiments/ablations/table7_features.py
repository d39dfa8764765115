"""Table 7 of the paper: the feature-based approach to NER. One pretrained model, fine-tuned, or
frozen with six choices of layer features feeding a BiLSTM tagger (task ner_features).

    python -m bert.sweep experiments/ablations/table7_features.py --workdir runs/ablations/table7
    python -m bert.sweep experiments/ablations/table7_features.py --workdir /shared/table7 --scale paper

Tiny scale: one 6-layer BERT-tiny (the last-four strategies need 4 blocks, and at 4 "all
layers" would be the last four: identical rows), WNUT-16 tweet NER
for CoNLL-2003, 7 arms x 3 seeds of tagging, 31 minutes on 2 CPU cores shared with another
sweep (docs/ABLATIONS.md).
"""
from bert.ablations import tasks
from bert.ablations.table import Column, Table

STRATEGIES = (("embeddings", "Embeddings", 91.0),
              ("second_to_last_hidden", "Second-to-last hidden", 95.6),
              ("last_hidden", "Last hidden", 94.9),
              ("weighted_sum_last_four", "Weighted sum last four hidden", 95.9),
              ("concat_last_four", "Concat last four hidden", 96.1),
              ("weighted_sum_all", "Weighted sum all hidden", 95.5))


def get_config(scale: str = "tiny") -> Table:
    config, overrides = tasks.pretraining(scale)
    if scale == "tiny":
        overrides = {**overrides, "model.num_layers": 6}
    return Table(
        name="table7_features",
        title="Table 7: fine-tuning versus feature-based NER",
        paper="Devlin et al. (2018), Table 7: BERT-base, CoNLL-2003 dev F1",
        pretrain_config=config, pretrain_overrides=overrides,
        columns=(Column("NER F1", tasks.ner_task(scale)),),
        reference="finetune",
        notes=("Feature arms freeze the encoder and train a two-layer BiLSTM tagger on the chosen "
               "layers (bert/tasks/feature_probe.py); 'all hidden' mixes every block.",))


def get_arms(scale: str = "tiny") -> list[dict]:
    arms = [dict(name="finetune", label="Fine-tuning approach", paper={"NER F1": 96.4})]
    for strategy, label, paper in STRATEGIES:
        arms.append(dict(name=strategy, label=label, pretrain_from="finetune",
                         evals={"NER F1": tasks.ner_features_task(scale, strategy)},
                         paper={"NER F1": paper}))
    return arms
