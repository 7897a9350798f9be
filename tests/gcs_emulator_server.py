"""`python tests/gcs_emulator_server.py PORT BUCKET`: the GCS emulator of `tests/gcs_emulator.py`,
in memory on 127.0.0.1:PORT with one bucket.

`gcp-storage-emulator` omits one thing real GCS does that tensorstore relies on: a download's
`x-goog-generation` header (the object's generation). Tensorstore's gcs kvstore takes a read's
generation from it and makes its next write to the same key conditional on it (OCDBT rewrites
its manifest this way); without it, that write fails with "Malformed StorageGeneration". The
download handler here adds the header (and `x-goog-metageneration`) from the object's record.
"""

from __future__ import annotations

import logging
import sys

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download_with_generation(request, response, storage, *args, **kwargs):
    _download(request, response, storage, *args, **kwargs)
    try:
        record = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
        return
    response["x-goog-generation"] = str(record["generation"])
    response["x-goog-metageneration"] = str(record["metageneration"])


def _with_generation(handlers: dict) -> dict:
    return {
        method: download_with_generation if handler is _download else handler
        for method, handler in handlers.items()
    }


def main(port: int, bucket: str) -> None:
    logging.basicConfig(level=logging.CRITICAL)  # 404s are expected (existence checks).
    # Both routes: the download endpoint, and the object endpoint with alt=media (it calls the
    # module's `download`).
    objects.download = download_with_generation
    server.HANDLERS = tuple((regex, _with_generation(h)) for regex, h in server.HANDLERS)
    server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
