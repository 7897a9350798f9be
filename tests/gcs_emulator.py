"""A Google Cloud Storage emulator on the loopback address, for gs:// tests without a network.

`gcp-storage-emulator` (a pure-Python server of the GCS JSON API, the `test` extra) runs in a
subprocess with one bucket in memory (`tests/gcs_emulator_server.py`, which adds the generation
header tensorstore needs). `env` points the three GCS clients a run uses at it:
  - epath's gs:// backend, fsspec's gcsfs (`STORAGE_EMULATOR_HOST`, anonymous; TensorFlow's GCS
    filesystem, which epath would prefer when TensorFlow is installed, is turned off with
    `EPATH_USE_TF=false`; gcsfs's bucket-type look-up through the storage control API, which the
    emulator lacks, with `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`),
  - tensorstore's gcs kvstore, where orbax writes array data (`TENSORSTORE_GCS_HTTP_URL`, with
    the fixed token tensorstore takes for tests, `GOOGLE_AUTH_TOKEN_FOR_TESTING`),
  - array_record's reader of TFDS data (riegeli's GcsReader over google-cloud-cpp's GCS client,
    `CLOUD_STORAGE_EMULATOR_ENDPOINT`).
`objects` lists the bucket through the emulator's HTTP API directly (an independent reading of
what landed in the bucket).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

BUCKET = "bucket"
HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """The running emulator: its URL, the environment of its clients, and `objects`."""

    def __init__(self, url: str):
        self.url = url
        self.env = {
            "STORAGE_EMULATOR_HOST": url,
            "TENSORSTORE_GCS_HTTP_URL": url,
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "EPATH_USE_TF": "false",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }

    def objects(self, prefix: str = "") -> list[str]:
        """The names of the bucket's objects under `prefix`, from the emulator's JSON API."""
        names, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            url = f"{self.url}/storage/v1/b/{BUCKET}/o?{urllib.parse.urlencode(query)}"
            with urllib.request.urlopen(url, timeout=30) as response:
                page = json.load(response)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)

    def read(self, name: str) -> bytes:
        """The content of object `name`, from the emulator's download API."""
        quoted = urllib.parse.quote(name, safe="")
        url = f"{self.url}/download/storage/v1/b/{BUCKET}/o/{quoted}?alt=media"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()


@contextlib.contextmanager
def running(log_path: str):
    """Starts the emulator (its log in `log_path`), yields an `Emulator`, stops it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, os.path.join(HERE, "gcs_emulator_server.py"), str(port), BUCKET]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, open(log_path).read()[-3000:]
                assert time.time() < deadline, "the GCS emulator did not start"
                time.sleep(0.1)
        yield Emulator(url)
    finally:
        server.terminate()
        server.wait(timeout=30)


def use(monkeypatch, emulator: Emulator) -> None:
    """Points this process's GCS clients at `emulator` (tensorstore reads its variables when
    it first opens a gcs kvstore; gcsfs when epath first makes its filesystem)."""
    for key, value in emulator.env.items():
        monkeypatch.setenv(key, value)
