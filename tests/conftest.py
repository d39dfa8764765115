"""Test-wide setup: eight fake CPU devices so parallel code paths run without accelerators."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Commands the tests launch keep glibc's allocator: their short runs are compile-bound, and
# compilation is ~15% slower under bert/allocator.py's one-arena settings
# (tests/test_pretrain_cli.py: 42 vs 50 s). tests/test_allocator.py sets its own environments.
os.environ.setdefault("BERT_JAX_ALLOCATOR", "system")
