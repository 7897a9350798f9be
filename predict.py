"""Count people on your own images, videos and live streams with a trained (or imported) model.

  python predict.py --checkpoint=workdirs/quickstart --output=out photos/ crowd.jpg
  python predict.py --checkpoint=workdirs/uot_shb/best --output=out --every=10 street.mp4
  python predict.py --config=configs/uot_shb.py --checkpoint=best_model.pth --output=out photos/
  python predict.py --checkpoint=workdirs/quickstart --output=out --resume photos/  # after a kill
  python predict.py --checkpoint=workdirs/quickstart --output=out --interval=1 --duration=600 \
      rtsp://camera.local/stream   # or http://.../video.mjpg, --camera=0
  python predict.py --checkpoint=workdirs/quickstart --output=out --zones=zones.json \
      --tta=flip,scales=0.8,1.0,1.25 street.mp4 photos/

INPUT: image files, folders (searched recursively for jpg, png, bmp, webp, tif and videos) and
video files (every `--every`-th frame), and live sources: stream URLs (`rtsp://`, `http(s)://`
MJPEG or HLS, anything OpenCV's FFmpeg reads) and cameras (`--camera=0`), counted after the files,
every `--every`-th frame or one frame each `--interval` seconds, for `--duration` seconds or
`--max_frames` frames or until Ctrl-C / SIGTERM (which end the run with every table written; see
`crowdjax.streams` and `crowdjax.stream_prediction`). The config is the run's `config.json`
next to the checkpoint unless `--config` is given (required for a published PyTorch file).
Writes to `--output`:
  counts.csv, counts.jsonl  one row per image or video frame: file, frame, count (+ points of
                            localization methods in counts.jsonl), appended as each input is
                            counted, so a killed run keeps what it counted
  counts.json               the same records as one JSON list, when the run ends
  overlays/<name>.png       the density as a heat map, or the heads, over the image, with the count
  videos/<name>.mp4         each counted frame annotated; videos/<name>_counts.png: count per frame
  streams/<name>.mp4        a stream's counted frames annotated (with --stream_video);
                            streams/<name>_counts.png: count over time. A stream's rows also
                            hold the time each frame was read (ISO 8601 UTC)
  failed.json               the inputs that failed in this run: file, kind, error
  log.txt                   the full log, libraries' INFO lines included (the console shows
                            them with -v 0; see `crowdjax.console`)
`--zones=zones.json` counts per named polygon too (file format and how cells cut by a zone's
edge are weighted: `crowdjax.zones`): a "zones" field in counts.jsonl, columns "zone:<name>"
(and "zone:<name>:per_m2" given areas or a homography) in counts.csv, and the zones drawn on
overlays and videos; a zone outside an image fails that input (kind "zones").
`--tta=flip,scales=...` and `--checkpoint` given more than once (an ensemble of one
architecture) count every input under each variant in one jitted call (`crowdjax.tta`): the
count is their mean, with "spread", "interval" (count +- `--interval_k` spreads) and "disagree"
(relative spread over `--disagreement`) in the tables.
`--resume` keeps the tables already in `--output` and counts only the inputs they lack (without
it a run starts new tables). Images larger than `--max_pixels` run in overlapping windows (see
`crowdjax.prediction`).

An input that fails is named in failed.json with its kind, and the others go on: "unreadable"
(missing, corrupt, not an image or video), "pixel_limit" (over `--max_image_pixels`, read from
the file's header before decoding, or once scaled up to the config's `data.min_short_side`),
"out_of_memory" (host or accelerator; lower `--max_pixels`), "io" (e.g. an output not
writable), "file_name", "opencv" and "stream_lost" (a stream that dropped and did not come back
within `--reconnect_attempts`; its rows so far stay). A stream URL that does not open (tried 4
times, each within `--stream_timeout`) is "unreadable". Any file name is read (names that are
not UTF-8 are written with \\xNN escapes in the tables, and output names are made safe). The
command then ends with a summary and exit status 1. A full disk ends the run; what was counted
stays, and no table is left half-written (see `crowdjax.count_table`).

Trust: a `config.json` whose method is not registered ("module:ATTR", which would import that
module, perhaps a file shipped with a downloaded workdir) is refused. To run such a method, name
it yourself: `--trust_method=module:ATTR` (or pass `--config`).
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from crowdjax import (
    cli,
    console,
    file_prediction,
    media,
    prediction,
    stream_prediction,
    streams,
    tta,
    zones,
)
from crowdjax.metric_writers import log

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (default: the run's config.json).", lock_config=True
)
_CHECKPOINT = flags.DEFINE_multi_string(
    "checkpoint",
    None,
    "A workdir, its best/ or checkpoints/, a step directory, or a .pth file; more than once for "
    "an ensemble of one architecture.",
)
_ZONES = flags.DEFINE_string("zones", None, "A zones file: count per named polygon too.")
_TTA = flags.DEFINE_string("tta", "", "Test-time variants, e.g. 'flip,scales=0.8,1.0,1.25'.")
_DISAGREEMENT = flags.DEFINE_float(
    "disagreement", tta.DEFAULT_DISAGREEMENT, "Relative spread of the variants that flags a count."
)
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.")
_EVERY = flags.DEFINE_integer("every", 1, "Count every n-th frame of videos and streams.")
_CAMERA = flags.DEFINE_multi_integer("camera", [], "Count a camera by its index (e.g. 0).")
_INTERVAL = flags.DEFINE_float(
    "interval", 0.0, "Count one stream frame each this many seconds (instead of --every)."
)
_DURATION = flags.DEFINE_float("duration", 0.0, "Count each stream this many seconds (0: no end).")
_MAX_FRAMES = flags.DEFINE_integer("max_frames", 0, "Count at most this many frames per stream.")
_STREAM_VIDEO = flags.DEFINE_bool("stream_video", False, "Write streams' annotated frames (.mp4).")
_STREAM_TIMEOUT = flags.DEFINE_float(
    "stream_timeout", 10.0, "Seconds to open a stream, or to wait for a frame before a reconnect."
)
_RECONNECT_ATTEMPTS = flags.DEFINE_integer(
    "reconnect_attempts",
    10,
    "Reconnections tried in a row after a stream drops (0.5 s pause, doubled up to 10 s).",
)
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", prediction.DEFAULT_MAX_PIXELS, "Most pixels per forward pass (memory bound)."
)
_MARGIN = flags.DEFINE_integer("margin", prediction.DEFAULT_MARGIN, "Context (px) around windows.")
_OVERLAYS = flags.DEFINE_bool("overlays", True, "Write overlay PNGs of images.")
_OVERLAY_SIDE = flags.DEFINE_integer("overlay_max_side", 1600, "Long side of overlays (px).")
_MAX_IMAGE_PIXELS = flags.DEFINE_integer(
    "max_image_pixels",
    media.DEFAULT_MAX_IMAGE_PIXELS,
    "Refuse larger images and frames (read from the file's header, before decoding).",
)
_RESUME = flags.DEFINE_bool(
    "resume", False, "Keep the tables in --output and skip the inputs they already hold."
)
_TRUST_METHOD = cli.define_trust_method()
_INTERVAL_K = flags.DEFINE_float(
    "interval_k", tta.DEFAULT_INTERVAL_K, "With --tta: the interval is the count +- k spreads."
)
flags.mark_flags_as_required(["checkpoint", "output"])


def main(argv):
    inputs = argv[1:] + [streams.camera(index) for index in _CAMERA.value]
    if not inputs:
        raise app.UsageError("name at least one image, folder, video, stream URL or --camera")
    try:
        stream_options = stream_prediction.StreamOptions(
            every=_EVERY.value,
            interval=_INTERVAL.value,
            duration=_DURATION.value,
            max_frames=_MAX_FRAMES.value,
            video=_STREAM_VIDEO.value,
            timeout=_STREAM_TIMEOUT.value,
            attempts=_RECONNECT_ATTEMPTS.value,
        )
        zone_set = zones.load_zones(_ZONES.value) if _ZONES.value else None
        variants = tta.Variants.parse(_TTA.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    console.setup(_OUTPUT.value)
    options = dict(
        config=_CONFIG.value,
        trusted_method=_TRUST_METHOD.value,
        max_pixels=_MAX_PIXELS.value,
        margin=_MARGIN.value,
        max_image_pixels=_MAX_IMAGE_PIXELS.value,
    )
    counter = tta.load_counter(
        _CHECKPOINT.value,
        variants=variants if _TTA.value else None,
        disagreement=_DISAGREEMENT.value,
        interval_k=_INTERVAL_K.value,
        **options,
    )
    rows, failures = file_prediction.predict_files(
        counter,
        inputs,
        _OUTPUT.value,
        every=_EVERY.value,
        overlays=_OVERLAYS.value,
        overlay_max_side=_OVERLAY_SIDE.value,
        resume=_RESUME.value,
        stream_options=stream_options,
        zone_set=zone_set,
    )
    images = len({r["file"] for r in rows})
    where = media.printable(_OUTPUT.value)
    log(f"counted {len(rows)} images or frames of {images} files; results in {where}")
    if failures:
        log(f"{len(failures)} input(s) failed (failed.json):")
        for failure in failures:
            log(f"  {failure['kind']}: {failure['error']}")
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
