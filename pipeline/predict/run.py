"""``trailers predict VIDEO...``: which genres appear when in any video, frame by frame.

Each video is sampled with the decode stage's own code (:mod:`pipeline.video`) at the decode
settings stored with the model (never others), decoded in a background thread and fed to the
streaming model chunk by chunk (``predict.chunk_frames``), so memory does not grow with the
video's length. Per video it writes ``<name>.timeline.csv``, ``<name>.json``, ``<name>.png``
and, with ``predict.html`` (or ``--html``), the viewer page ``<name>.html``, all under
``--out`` (default ``outputs/predict``). A video that cannot be read is reported in one line and
skipped; the stage fails (exit code 1) after the others are written. ``--catalogue`` predicts a
whole folder or CSV list of videos on Beam instead (:mod:`pipeline.predict.catalogue`), each
video through :func:`predict_video` as here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.predict.models import LoadedModel, load
from pipeline.predict.outputs import output_names, write_summary, write_timeline_csv
from pipeline.predict.stream import StreamingModel, prefetched
from pipeline.timeline_plot import draw_timeline
from pipeline.video import Geometry, VideoError, probe, read_frames

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
    if catalogue is not None:
        from pipeline.predict.catalogue import run_catalogue  # Beam, only for a catalogue

        run_catalogue(config, Path(catalogue), model, out_dir, html)
        return
    loaded = load(model, config)
    streaming = StreamingModel(loaded.network)
    videos = [Path(video) for video in videos]
    failed = []
    for video, name in zip(videos, output_names(videos), strict=True):
        try:
            predict_video(video, name, loaded, streaming, config, out_dir, html)
        except VideoError as exc:
            log.warning("%s: %s", video, exc)
            failed.append(str(video))
    if failed:
        raise StageError(f"{len(failed)} of {len(videos)} videos failed: {', '.join(failed)}")
    log.info("wrote %d timeline(s) to %s", len(videos), out_dir)


def predict_video(
    video: Path,
    name: str,
    loaded: LoadedModel,
    streaming: StreamingModel,
    config: Config,
    out_dir: Path,
    html: bool,
) -> None:
    """Sample, predict and write one video's outputs; VideoError if it cannot be read."""
    settings = loaded.decode
    info = probe(video)  # PyAV first: it names what is wrong where decord might abort
    geometry = Geometry.fit(
        info.width, info.height, settings.width, settings.height, settings.aspect
    )
    sampling, chunks = read_frames(
        video,
        settings.fps,
        geometry,
        chunk_frames=config.predict.chunk_frames,
        threads=config.predict.decoder_threads,
        fault_tolerance=config.decode.fault_tolerance,
        remux_formats=config.decode.remux_formats,
    )
    with tqdm(total=len(sampling.times), desc=name, unit="frame", leave=False, disable=None) as bar:
        probabilities = streaming.timeline(prefetched(chunks), bar.update)
    write_timeline_csv(out_dir / f"{name}.timeline.csv", probabilities, settings.fps)
    write_summary(
        out_dir / f"{name}.json",
        video=video,
        model=loaded.source,
        decode=dataclasses.asdict(settings),
        probabilities=probabilities,
        duration_s=sampling.duration_s,
        timeline=config.timeline,
        trailer_id=name,
    )
    draw_timeline(
        out_dir / f"{name}.png",
        probabilities,
        settings.fps,
        sampling.duration_s,
        title=video.name,
    )
    if html:
        from pipeline.viewer import write_viewer  # the viewer's page, only when asked for

        write_viewer(
            out_dir / f"{name}.html",
            video,
            settings.fps,
            sampling.duration_s,
            probabilities,
            config.timeline.threshold,
            title=video.name,
            min_segment_s=config.timeline.min_segment_s,
        )
    log.info("%s: %d frames -> %s", video, len(probabilities), out_dir / f"{name}.*")
