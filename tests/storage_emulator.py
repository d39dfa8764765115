"""A Google Cloud Storage emulator on 127.0.0.1 for tests: gs:// URLs without a cloud.

Both clients a run uses are pointed at it: gcsfs (etils.epath, hence bert.files) through
STORAGE_EMULATOR_HOST, and TensorStore (orbax's array writes) through TENSORSTORE_GCS_HTTP_URL
with a fixed test token instead of credentials.

    python -m tests.storage_emulator PORT BUCKET   # what `gcs_emulator` runs
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_environment(endpoint: str) -> dict[str, str]:
    """The variables that send gs:// requests of this process and its children to `endpoint`."""
    return {"STORAGE_EMULATOR_HOST": endpoint, "TENSORSTORE_GCS_HTTP_URL": endpoint,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"}


@contextlib.contextmanager
def gcs_emulator(bucket: str) -> Iterator[str]:
    """Runs an in-memory emulator holding the empty `bucket`; yields its endpoint URL."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.storage_emulator", str(port), bucket],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the storage emulator did not start (exit {server.poll()})")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)



def _serve(port: int, bucket: str) -> None:
    """The emulator, sending the object generation headers real GCS sends with every download:
    TensorStore reads an object's generation from them (and refuses a read without one)."""
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    download = objects.download

    def download_with_generation(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        with contextlib.suppress(NotFound):
            found = storage.get_file_obj(request.params["bucket_name"],
                                         request.params["object_id"])
            response["x-goog-generation"] = found["generation"]
            response["x-goog-metageneration"] = found["metageneration"]

    objects.download = download_with_generation  # before the server's routes are built
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.run()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
