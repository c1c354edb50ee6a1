"""``trailers predict VIDEO...``: which genres appear when in any video, frame by frame.

Each video is sampled with the decode stage's own code (:mod:`pipeline.core.video`) at the decode
settings stored with the model (never others), decoded in a background thread and fed to the
streaming model chunk by chunk (``predict.chunk_frames``), so memory does not grow with the
video's length. Per video it writes ``<name>.timeline.csv``, ``<name>.json``, ``<name>.png``
and, with ``predict.html`` (or ``--html``), the viewer page ``<name>.html``, all under
``--out`` (default ``outputs/predict``). A video that cannot be read is reported in one line and
skipped; the stage fails (exit code 1) after the others are written. A video far from the
model's training data (validate's drift measure against the training split's statistics saved
with the model, ``predict.drift_thresholds``) gets a warning line, and, when the model is the
synthetic demo's, the run one line saying what it was trained on. ``--catalogue`` predicts a
whole folder or CSV list of videos on Beam instead (:mod:`pipeline.predict.catalogue`), each
video through :func:`pipeline.predict.one_video.predict_video` as here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import StageError
from pipeline.core.video import VideoError
from pipeline.infra.drift import check_frame_features
from pipeline.predict.loader import load
from pipeline.predict.one_video import predict_video, tell_if_demo
from pipeline.predict.outputs import output_names
from pipeline.predict.stream import StreamingModel

log = logging.getLogger(__name__)


def run(
    config: Config,
    videos: Sequence[str | Path],
    model: str | None = None,
    out: str | Path | None = None,
    html: bool | None = None,
    catalogue: str | Path | None = None,
) -> None:
    """Predict every video's genre timeline (of ``videos``, or of the ``catalogue`` folder or
    CSV file on Beam); StageError if any video failed (after the rest)."""
    out_dir = Path(out) if out is not None else config.paths.stage_outputs("predict")
    html = config.predict.html if html is None else html
    check_frame_features(config.predict.drift_thresholds, "predict.drift_thresholds")
    if catalogue is not None:
        from pipeline.predict.catalogue import run_catalogue  # Beam, only for a catalogue

        run_catalogue(config, Path(catalogue), model, out_dir, html)
        return
    loaded = load(model, config)
    streaming = StreamingModel(loaded.network)
    videos = [Path(video) for video in videos]
    failed, drifts = [], []
    for video, name in zip(videos, output_names(videos), strict=True):
        try:
            drifts.append(predict_video(video, name, loaded, streaming, config, out_dir, html))
        except VideoError as exc:
            log.warning("%s: %s", video, exc)
            failed.append(str(video))
    tell_if_demo(loaded, drifts)
    if failed:
        raise StageError(f"{len(failed)} of {len(videos)} videos failed: {', '.join(failed)}")
    log.info("wrote %d timeline(s) to %s", len(videos), out_dir)
