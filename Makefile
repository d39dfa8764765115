# Two commands from a fresh machine: `make demo` and `make test`; `make bench` and
# `make bench-finetune` for docs/PERFORMANCE.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench bench-finetune install install-test install-bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# torch goes in alone first so that pip takes the pinned CPU build, not a CUDA one.
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q $$(grep -E '^torch==' requirements-test.txt)
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

# The benchmark's peers pin transformers 4.57 (the last with FlaxBertForPreTraining), which the
# test venv's transformers and tokenizers pins exclude: they get a venv of their own, with the
# library's pins except tokenizers, which transformers 4.57 picks.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python

$(BENCH_VENV)/.installed: requirements.txt requirements-bench.txt
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q $$(grep -E '^torch==' requirements-bench.txt)
	$(BENCH_PY) -m pip install -q $$(sed 's/#.*//' requirements.txt | grep -vE '^(tokenizers==|\s*$$)') \
		-r requirements-bench.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(BENCH_VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m bert.demo --workdir runs/demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -q tests

# BERT-base, 128 tokens, batch 8, fp32: ours vs transformers' PyTorch and Flax BERT, and ours
# with the last block computing every row, with optax's gradient clip and under glibc's default
# allocator, in three interleaved rounds (about 35 minutes on 2 CPU cores). Tables:
# docs/PERFORMANCE.md.
bench: $(BENCH_VENV)/.installed
	$(BENCH_PY) -m benchmarks.step --config experiments/pretrain/base.py --vs torch,hf_flax \
		--ablations full_last_layer,optax_clip,system_allocator --seq_len 128 --batch_size 8 \
		--steps 10 --warmup_steps 3 --repeats 3 --output results/bench_base_seq128.json

# Fine-tuning, BERT-base fp32: the SST-2-shaped classification step (128 tokens, batch 32) and
# the SQuAD-shaped span step (384 tokens, batch 8: 32 does not fit 24 GiB) against
# transformers' PyTorch and Flax heads, then evaluation of 512 real sentences (length buckets vs
# max_seq_len), three interleaved rounds each (hours on 2 CPU cores). Tables: docs/PERFORMANCE.md, "Fine-tuning".
bench-finetune: $(BENCH_VENV)/.installed
	$(BENCH_PY) -m benchmarks.step --config experiments/pretrain/base.py --task classify \
		--vs torch,hf_flax --steps 5 --warmup_steps 3 --repeats 3 \
		--output results/bench_base_classify_seq128.json
	$(BENCH_PY) -m benchmarks.step --config experiments/pretrain/base.py --task squad \
		--vs torch,hf_flax --batch_size 8 --steps 3 --warmup_steps 3 --repeats 3 \
		--output results/bench_base_squad_seq384.json
	$(BENCH_PY) -m benchmarks.step --config experiments/pretrain/base.py --task eval \
		--ablations fixed_length --eval_sentences 512 --steps 2 --warmup_steps 0 --repeats 3 \
		--output results/bench_base_eval_sotu.json

clean:
	rm -rf runs
