"""One video's genre timeline: sampled with the decode stage's own code
(:mod:`pipeline.core.video`) at the model's decode settings, decoded in a background thread, fed
to the streaming model chunk by chunk, and written as CSV, JSON, PNG and (optionally) the viewer
page. ``trailers predict VIDEO...`` (:mod:`pipeline.predict.run`) and the catalogue's Beam
workers (:mod:`pipeline.predict.catalogue`) both call :func:`predict_video`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.core.config import Config, PredictConfig
from pipeline.core.timeline import chosen_rules
from pipeline.core.video import sample_video
from pipeline.infra.beam import decoder_threads
from pipeline.infra.drift import ExampleTap, video_drift
from pipeline.predict.loader import LoadedModel
from pipeline.predict.outputs import DECIMALS, write_summary, write_timeline_csv
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
) -> dict[str, Any] | None:
    """Sample, predict and write one video's outputs; VideoError if it cannot be read.
    ``busy_workers``: how many videos are decoded at once (a catalogue's workers). Returns how
    far the video is from the model's training data (:func:`training_drift`; None: not
    measured)."""
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
    tap = example_tap(loaded, config)
    with tqdm(total=len(sampling.times), desc=name, unit="frame", leave=False, disable=None) as bar:
        probabilities = streaming.timeline(prefetched(tap(chunks) if tap else chunks), bar.update)
    drift = training_drift(
        tap.examples if tap else None, sampling.source_size, loaded, config.predict
    )
    if drift:
        warn_if_far(video, drift)
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
        trained_on=None if loaded.trained_on is None else dataclasses.asdict(loaded.trained_on),
        evaluation=loaded.evaluation,
        drift=drift,
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
    return drift


def example_tap(loaded: LoadedModel, config: Config) -> ExampleTap | None:
    """What summarises the video's frames as validate summarised the model's training shards,
    None when there is nothing to compare them with (no statistics, or no features asked)."""
    if (
        loaded.statistics is None
        or loaded.trained_on is None
        or not config.predict.drift_thresholds
    ):
        return None
    return ExampleTap(loaded.trained_on.frames_per_shard, config.validate_.black_level)


FRAME_SIZE = "frame_size"
"""The drift entry, and the name in ``far``, of the video's frame size."""


def training_drift(
    examples: list[dict[str, list]] | None,
    size: tuple[int, int],
    loaded: LoadedModel,
    settings: PredictConfig,
) -> dict[str, Any] | None:
    """How far the video is from the model's training data, None when nothing is known to
    compare it with: ``{"divergence": {feature: value}, "thresholds": {...}, "frame_size":
    {...} or None, "far": [what is far]}``. ``divergence``: the video's ``examples`` against the
    training split's statistics on each of ``predict.drift_thresholds`` (empty without
    examples); ``frame_size``: its ``size`` (width, height) beside the training videos' least
    and greatest (the card's), far beyond ``predict.frame_size_tolerance`` times them."""
    trained = loaded.trained_on
    known_size = trained is not None and trained.frame_size is not None
    if examples is None and not known_size:
        return None
    divergence = {}
    if examples is not None:
        measured = video_drift(examples, loaded.statistics, settings.drift_thresholds)
        divergence = {m["feature"]: round(m["value"], DECIMALS) for m in measured}
    far = [name for name, value in divergence.items() if value > settings.drift_thresholds[name]]
    frame_size = None
    if known_size:
        frame_size = {
            "video": list(size),
            "trained": trained.frame_size,
            "tolerance": settings.frame_size_tolerance,
        }
        if trained.size_far(size, settings.frame_size_tolerance):
            far.append(FRAME_SIZE)
    thresholds = dict(settings.drift_thresholds) if examples is not None else {}
    return {"divergence": divergence, "thresholds": thresholds, FRAME_SIZE: frame_size, "far": far}


def warn_if_far(video: Path, drift: dict[str, Any]) -> None:
    """A warning line per kind of distance that is far: the frame features', the frame size's."""
    features = [name for name in drift["far"] if name != FRAME_SIZE]
    if features:
        log.warning(
            "%s: far from the model's training data: %s (Jensen-Shannon divergence to its "
            "training split, predict.drift_thresholds)",
            video,
            ", ".join(
                f"{name} {drift['divergence'][name]:.3f} > {drift['thresholds'][name]:g}"
                for name in features
            ),
        )
    if FRAME_SIZE in drift["far"]:
        size = drift[FRAME_SIZE]
        (low_w, low_h), (high_w, high_h) = size["trained"]["min"], size["trained"]["max"]
        log.warning(
            "%s: frame size %dx%d far from the model's training videos (%dx%d to %dx%d; "
            "predict.frame_size_tolerance %g)",
            video,
            *size["video"],
            low_w,
            low_h,
            high_w,
            high_h,
            size["tolerance"],
        )


def tell_if_demo(loaded: LoadedModel, drifts: Iterable[dict[str, Any] | None]) -> None:
    """One line saying what the model was trained on, when it is the synthetic demo's and any
    of the videos' ``drifts`` (:func:`training_drift`) is far: said once per run, for one video
    or a catalogue."""
    demo = loaded.trained_on is not None and loaded.trained_on.synthetic
    if demo and any(drift and drift["far"] for drift in drifts):
        log.warning(
            "the model was trained only on %s: its timelines of videos unlike those mean "
            "little; train it on your own trailers (docs/bring-your-own.md)",
            loaded.trained_on.describe(),
        )
