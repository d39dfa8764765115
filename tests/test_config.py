"""Config validation names the offending key before any data or compilation work."""
import pytest

from bert.config import model_config, paper_recipe, validate
from bert.model import BertForPreTraining, count_params
from bert.optim import OptimizerSettings, learning_rate_schedule
from tests.fakes import tiny_config


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"model.hidden_size": 129}, "config.model.hidden_size"),
        ({"max_seq_len": 64}, "config.max_seq_len"),  # position table of 32
        ({"max_predictions_per_seq": 14}, "config.max_predictions_per_seq"),  # 16 - 3 maskable
        ({"batch_size": 10, "grad_accum_steps": 4}, "config.batch_size"),
        ({"data.mask_token_ratio": 0.7}, "config.data.mask_token_ratio"),
        ({"data.masking": "sometimes"}, "config.data.masking"),
        ({"data.corpus_format": "xml"}, "config.data.corpus_format"),  # the data stage's check
        ({"parallelism": "vmap"}, "config.parallelism"),
        ({"model.preset": "huge"}, "config.model.preset"),
        ({"data.train_files": ""}, "config.data.train_files"),
        ({"warmup_steps": -1}, "config.warmup_steps"),
        ({"optim.b2": 1.0}, "config.optim.b2"),
        ({"model.num_heads": 0}, "config.model.num_heads"),
        # vocab_size 0 takes the tokenizer's: one trained here needs a size from somewhere.
        ({"model.vocab_size": 0}, "config.data.tokenizer_vocab_size"),
        ({"data.tokenizer_vocab_size": 200}, "config.data.tokenizer_vocab_size"),  # table of 100
    ],
)
def test_bad_value_is_reported_with_its_key(overrides, key):
    config = tiny_config(**overrides)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate(config)


def test_validation_leaves_the_config_as_written_and_the_optimizer_cuts_the_warmup(caplog):
    config = tiny_config(warmup_steps=500, train_steps=100)
    validate(config)
    validate(config)  # as the command line and then the training function do
    assert config.warmup_steps == 500
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    settings = OptimizerSettings.from_config(config)
    assert (settings.warmup_steps, settings.total_steps) == (100, 100)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "config.warmup_steps=500" in warnings[0], warnings
    schedule = learning_rate_schedule(settings)
    # Warmup over all 100 steps: halfway there at step 50 (not 1e-3 * 50 / 500).
    assert float(schedule(50)) == pytest.approx(config.learning_rate / 2)
    assert float(schedule(100)) == pytest.approx(config.learning_rate)
    assert "warming up over all 100 steps" in caplog.text


def test_a_warmup_longer_than_the_schedule_is_refused_where_no_config_cuts_it():
    with pytest.raises(ValueError, match="warmup_steps=20 must be between 0 and the schedule's 10"):
        OptimizerSettings(learning_rate=1e-3, total_steps=10, warmup_steps=20)


def test_vocab_size_zero_is_the_tokenizers_once_it_is_known():
    config = tiny_config(**{"model.vocab_size": 0, "data.tokenizer": "some/vocab"})
    validate(config)
    assert model_config(config, tokenizer_vocab_size=30522).vocab_size == 30522
    with pytest.raises(ValueError, match="config.model.vocab_size: 0 takes the tokenizer's"):
        model_config(config)
    trains = tiny_config(**{"model.vocab_size": 0, "data.tokenizer_vocab_size": 64})
    validate(trains)
    # Before the data stage runs (benchmarks on synthetic batches): the size it will train.
    assert model_config(trains).vocab_size == 64
    assert model_config(trains, tokenizer_vocab_size=60).vocab_size == 60  # what it trained
    assert model_config(tiny_config(), tokenizer_vocab_size=64).vocab_size == 100  # as written


def test_unknown_key_is_reported():
    config = tiny_config()
    config.data.mask_probability = 0.2
    with pytest.raises(ValueError, match=r"config\.data\.mask_probability"):
        validate(config)


def test_valid_config_passes_and_overrides_preset():
    config = tiny_config(**{"model.num_layers": 3})
    validate(config)
    bert = model_config(config)
    assert (bert.num_layers, bert.hidden_size, bert.num_heads, bert.intermediate_size) == (3, 128, 2, 512)


@pytest.mark.parametrize("preset, phase, seq, steps", [("base", "128", 128, 900_000), ("large", "512", 512, 1_000_000)])
def test_paper_recipes(preset, phase, seq, steps):
    config = paper_recipe(preset, phase)
    config.data.train_files = "corpus.txt"
    validate(config)
    assert (config.max_seq_len, config.train_steps, config.batch_size) == (seq, steps, 256)
    assert config.schedule_steps == 1_000_000


def test_paper_sizes_have_published_parameter_counts():
    base = count_params(BertForPreTraining(model_config(paper_recipe("base"))))
    large = count_params(BertForPreTraining(model_config(paper_recipe("large"))))
    assert base == pytest.approx(110e6, rel=0.01)
    assert large == pytest.approx(340e6, rel=0.02)
