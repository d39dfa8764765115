"""A Google Cloud Storage emulator on 127.0.0.1 for tests: gs:// URLs without a cloud.

Both clients a run uses are pointed at it: gcsfs (etils.epath, hence bert.files) through
STORAGE_EMULATOR_HOST, and TensorStore (orbax's array writes) through TENSORSTORE_GCS_HTTP_URL
with a fixed test token instead of credentials.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from typing import Iterator


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
    server = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--default-bucket", bucket],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

