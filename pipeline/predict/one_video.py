"""One video's genre timeline: sampled with the decode stage's own code
(:mod:`pipeline.core.video`) at the model's decode settings, decoded in a background thread, fed
to the streaming model chunk by chunk, and written as CSV, JSON, PNG and (optionally) the viewer
page. ``trailers predict VIDEO...`` (:mod:`pipeline.predict.run`) and the catalogue's Beam
workers (:mod:`pipeline.predict.catalogue`) both call :func:`predict_video`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from tqdm import tqdm

from pipeline.core.config import Config
from pipeline.core.timeline import chosen_rules
from pipeline.core.video import sample_video
from pipeline.infra.beam import decoder_threads
from pipeline.predict.loader import LoadedModel
from pipeline.predict.outputs import write_summary, write_timeline_csv
from pipeline.predict.stream import StreamingModel, prefetched
from pipeline.views.timeline_plot import draw_timeline

log = logging.getLogger(__name__)


def predict_video(
    video: Path,
    name: str,
    loaded: LoadedModel,
    streaming: StreamingModel,
    config: Config,
    out_dir: Path,
    html: bool,
    busy_workers: int = 1,
) -> None:
    """Sample, predict and write one video's outputs; VideoError if it cannot be read.
    ``busy_workers``: how many videos are decoded at once (a catalogue's workers)."""
    settings = loaded.decode
    sampling, chunks = sample_video(
        video,
        settings.fps,
        settings.height,
        settings.width,
        settings.aspect,
        chunk_frames=config.predict.chunk_frames,
        threads=decoder_threads(config.predict.decoder_threads, busy_workers),
        fault_tolerance=config.decode.fault_tolerance,
        remux_formats=config.decode.remux_formats,
        allow_truncated=config.decode.allow_truncated,
        decoder=config.decode.decoder,
    )
    rules = chosen_rules(config.timeline, loaded.rules)
    with tqdm(total=len(sampling.times), desc=name, unit="frame", leave=False, disable=None) as bar:
        probabilities = streaming.timeline(prefetched(chunks), bar.update)
    write_timeline_csv(out_dir / f"{name}.timeline.csv", probabilities, settings.fps)
    write_summary(
        out_dir / f"{name}.json",
        video=video,
        model=loaded.source,
        decode=dataclasses.asdict(settings),
        decoder=sampling.decoder,
        missing_s=sampling.missing_s,
        probabilities=probabilities,
        duration_s=sampling.duration_s,
        timeline=config.timeline,
        rules=rules,
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
        from pipeline.views.viewer import write_viewer  # the viewer's page, only when asked for

        write_viewer(
            out_dir / f"{name}.html",
            video,
            settings.fps,
            sampling.duration_s,
            probabilities,
            rules,
            title=video.name,
        )
    log.info("%s: %d frames -> %s", video, len(probabilities), out_dir / f"{name}.*")
