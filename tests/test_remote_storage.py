"""gs:// work directories end to end, against a storage emulator this module starts itself."""
import json
import os
import struct

import numpy as np
import pytest
from etils import epath
from etils.epath import backend

from bert import files
from bert.metrics import MetricsWriter, read_metrics
from tests.storage_emulator import client_environment, gcs_emulator
from tests.test_pretrain_cli import REPO, _pretrain

BUCKET = "bert-test"


@pytest.fixture(scope="module")
def gcs():
    """The emulator's environment, set in this process (and so in the commands it starts)."""
    with gcs_emulator(BUCKET) as endpoint, pytest.MonkeyPatch.context() as patch:
        for key, value in client_environment(endpoint).items():
            patch.setenv(key, value)
        yield f"gs://{BUCKET}"


def test_urls_stay_urls_and_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(files.absolute("gs://bucket/run/checkpoints")) == "gs://bucket/run/checkpoints"
    assert str(files.absolute("run")) == str(tmp_path / "run")
    assert files.is_remote("gs://bucket/x") and not files.is_remote("relative/gs:/x")


def test_a_scheme_without_backend_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="nosuchfs://bucket/x"):
        files.path("nosuchfs://bucket/x")


def test_files_round_trip_through_the_bucket(gcs, tmp_path):
    files.write_atomically(f"{gcs}/files/a.json", '{"a": 1}')
    assert files.read_text(f"{gcs}/files/a.json") == '{"a": 1}'
    with files.staged_directory(f"{gcs}/files/folder") as local:
        os.makedirs(os.path.join(local, "sub"))
        (epath.Path(local) / "sub" / "b.bin").write_bytes(b"\x00\x01")
    with files.local_copy(f"{gcs}/files/folder") as local:
        assert (epath.Path(local) / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(FileExistsError, match="not empty"):
        with files.new_directory(f"{gcs}/files/folder"):
            pass
    with pytest.raises(RuntimeError):  # a failed block uploads nothing
        with files.new_directory(f"{gcs}/files/never") as local:
            (epath.Path(local) / "c.txt").write_text("c")
            raise RuntimeError("stop")
    assert not epath.Path(f"{gcs}/files/never/c.txt").exists()


def _events(directory):
    """(step, kind) of every event in every event file under `directory`, file by file."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted(epath.Path(directory).iterdir()):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            kind = ("start" if event.session_log.status == 1 else
                    "scalar" if event.summary.value else "other")
            found.append((event.step, kind))
    return found


@pytest.mark.parametrize("remote", [False, True], ids=["local", "gs"])
def test_resumed_metrics_drop_redone_rows_and_tell_tensorboard(remote, request, tmp_path):
    workdir = f"{request.getfixturevalue('gcs')}/metrics" if remote else str(tmp_path)
    first = MetricsWriter(workdir, remote_flush_seconds=0)
    for step in (1, 2, 3, 4):
        first.write(step, {"loss": float(step)})
    first.close()
    resumed = MetricsWriter(workdir, resume_step=2)
    resumed.write(3, {"loss": 30.0})
    resumed.close()

    assert [(r["step"], r["loss"]) for r in read_metrics(files.path(workdir) / "metrics.jsonl")] \
        == [(1, 1.0), (2, 2.0), (3, 30.0)]
    tensorboard = files.path(workdir) / "tensorboard"
    assert len(list(tensorboard.iterdir())) == 2
    events = _events(tensorboard)
    # TensorBoard drops every earlier event at or after a file's START step: 3 and 4 here.
    scalars_then_start = [e for e in events if e[1] != "other"]
    assert scalars_then_start == [(1, "scalar"), (2, "scalar"), (3, "scalar"), (4, "scalar"),
                                  (3, "start"), (3, "scalar")]


def _names(directory):
    """Entries of a remote folder as they are now: this process's gcsfs caches listings, and
    the commands below write through their own."""
    backend.fsspec_backend.fs(str(directory)).invalidate_cache()
    return sorted(p.name for p in epath.Path(directory).iterdir())


def _remote_corpus(gcs, tmp_path):
    """The train files of `_pretrain` and two eval files, gzipped, uploaded: their overrides."""
    import glob
    import gzip

    for path in sorted(glob.glob(os.path.join(REPO, "data/sotu/train/19[0-4]*.txt"))):
        files.copy_file(path, f"{gcs}/corpus/train/{os.path.basename(path)}")
    for path in sorted(glob.glob(os.path.join(REPO, "data/sotu/eval/19[24]*.txt"))):
        packed = tmp_path / (os.path.basename(path) + ".gz")
        packed.write_bytes(gzip.compress(open(path, "rb").read()))
        files.copy_file(packed, f"{gcs}/corpus/eval/{packed.name}")
    return (f"--config.data.train_files={gcs}/corpus/train/*.txt",
            f"--config.data.eval_files={gcs}/corpus/eval/*.txt.gz")


def _prepared_parts(log):
    return [line for line in log.splitlines() if " part " in line and " instances, " in line]


def test_pretraining_writes_its_workdir_to_the_bucket_and_resumes_from_it(gcs, tmp_path):
    workdir = f"{gcs}/pretrain"
    corpus = _remote_corpus(gcs, tmp_path)
    mirror = f"--config.data.local_cache_dir={tmp_path / 'host-a'}"
    log = _pretrain(workdir, *corpus, mirror, "--config.train_steps=2")
    assert len(_prepared_parts(log)) == 2  # a train part and an eval part
    run = epath.Path(workdir)
    assert _names(run / "checkpoints") == ["2"]
    [examples] = [name for name in _names(run / "data") if name.startswith("examples-")]
    assert _names(run / "data" / examples) == ["eval", "key.json", "plan.json", "summary.json",
                                               "train"]
    key = json.loads((run / "data" / examples / "key.json").read_text())
    assert key["eval_files"][0][0].startswith(f"{gcs}/corpus/eval/")
    # This host's copies of the examples (memory-mapped) and of the trained tokenizer:
    assert sorted(os.listdir(tmp_path / "host-a")) == _names(run / "data")
    assert json.loads((run / "experiment_config.json").read_text())["train_steps"] == 2
    assert json.loads((run / "bert_config.json").read_text())["num_layers"] == 2
    assert (run / "tokenizer").is_dir()
    assert list((run / "tensorboard").iterdir())
    assert not os.path.exists(os.path.join(REPO, "gs:"))  # nothing landed on the local disk

    # Another host (a new local copy) resumes: it reads the remote cache, prepares nothing.
    mirror = f"--config.data.local_cache_dir={tmp_path / 'host-b'}"
    log = _pretrain(workdir, *corpus, mirror, "--config.train_steps=4")
    assert "resumed from step 2" in log and _prepared_parts(log) == []
    assert sorted(os.listdir(tmp_path / "host-b")) == _names(run / "data")
    assert _names(run / "checkpoints") == ["2", "4"]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]

    # A remote work directory converts to a remote Hugging Face folder and back.
    from bert import checkpoint, convert

    convert.export_hf(workdir, f"{gcs}/hf")
    assert (epath.Path(gcs) / "hf" / "model.safetensors").exists()
    convert.import_hf(f"{gcs}/hf", str(tmp_path / "model"))
    restored = checkpoint.load_params(str(tmp_path / "model"))
    trained = checkpoint.load_params(workdir)
    np.testing.assert_array_equal(
        restored["bert"]["embeddings"]["word_embeddings"]["embedding"],
        trained["bert"]["embeddings"]["word_embeddings"]["embedding"])
