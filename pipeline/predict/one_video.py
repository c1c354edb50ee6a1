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
from pipeline.core.video import Geometry, probe, read_frames
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
    rules = chosen_rules(config.timeline, loaded.rules)
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
