"""Per-device memory of one pretraining step under data, FSDP and tensor parallelism.

    python scripts/memory_report.py [--presets base,large] [--meshes data=8,fsdp=8,tensor=8]
                                    [--batch_size 256] [--seq_len 128] [--remat none]

Compiles the real train step (AdamW, fp32, dropout on) for 8 devices from shapes alone and
prints XLA's memory analysis as a Markdown table (docs/PARALLELISM.md holds its output). No
param is ever allocated, so BERT-large fits a laptop; the devices are 8 fake CPU devices
unless XLA_FLAGS already says otherwise. A mesh is written axis=size[xaxis=size...], the
other axes 1, e.g. data=2xfsdp=4.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time  # noqa: E402

from absl import app, flags  # noqa: E402

from bert import partitioning  # noqa: E402
from bert.config import model_config, pretraining_config  # noqa: E402
from bert.model import BertForPreTraining, count_params  # noqa: E402
from bert.train import PretrainingTask  # noqa: E402
from bert.optim import OptimizerSettings, make_optimizer  # noqa: E402

_PRESETS = flags.DEFINE_list("presets", ["base", "large"], "model sizes (config.model.preset)")
_MESHES = flags.DEFINE_list("meshes", ["data=8", "fsdp=8", "tensor=8"], "mesh layouts")
_BATCH = flags.DEFINE_integer("batch_size", 256, "global sequences per step")
_SEQ = flags.DEFINE_integer("seq_len", 128, "tokens per sequence")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "config.model.remat")

GIB = 2**30


def _mesh(text: str) -> dict[str, int]:
    sizes = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in text.split("x"):
        axis, _, size = part.partition("=")
        if axis not in sizes or not size.isdigit():
            raise ValueError(f"--meshes: {text!r} is not like data=2xfsdp=4")
        sizes[axis] = int(size)
    return sizes


def _row(preset: str, mesh: str) -> str:
    config = pretraining_config()
    config.model.preset = preset
    config.model.remat = _REMAT.value
    config.batch_size, config.max_seq_len = _BATCH.value, _SEQ.value
    config.max_predictions_per_seq = max(1, round(0.15 * _SEQ.value))
    for axis, size in _mesh(mesh).items():
        config.mesh[axis] = size
    model = BertForPreTraining(model_config(config))
    start = time.perf_counter()
    tx = make_optimizer(OptimizerSettings.from_config(config))
    memory = partitioning.step_memory(
        partitioning.build_runner(config, PretrainingTask(model, 1.0), tx), config)
    print(f"  {preset} {mesh}: compiled in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    replicated = sorted({note.split(" its ")[1].split(" dimension")[0]
                         for note in memory.replicated_notes})
    cells = [f"BERT-{preset} ({count_params(model) / 1e6:.0f}M)", mesh.replace("x", " × "),
             *(f"{b / GIB:.2f}" for b in (memory.params, memory.opt_state, memory.temp,
                                          memory.peak)),
             ", ".join(replicated) or "-"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str]) -> None:
    del argv
    print(f"Per device, GiB; global batch {_BATCH.value} × {_SEQ.value} tokens, fp32, AdamW, "
          f"remat={_REMAT.value}.\n")
    print("| model | mesh | params | optimizer state | activations + temporaries | peak | "
          "replicated (mesh axis does not divide) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for preset in _PRESETS.value:
        for mesh in _MESHES.value:
            print(_row(preset, mesh), flush=True)


if __name__ == "__main__":
    app.run(main)
