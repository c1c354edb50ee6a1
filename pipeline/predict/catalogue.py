"""``trailers predict --catalogue DIR|CSV``: every video of a catalogue, one Beam element each.

The catalogue is a folder (every video in it, listed as decode lists a videos folder:
:func:`pipeline.core.video.list_videos` with ``decode.video_extensions``) or a CSV file with a
``video`` column (paths relative to the CSV's folder; other columns are ignored). Each video is
one element on the configured Beam runner (``beam:``, :mod:`pipeline.infra.beam`), and a worker runs
the very function ``trailers predict VIDEO...`` runs
(:func:`pipeline.predict.one_video.predict_video`),
writing the video's outputs straight into ``--out``, which must be storage every worker shares.

Why a DoFn with ``setup()`` and :class:`apache_beam.utils.shared.Shared`, not ``RunInference``:
our element is a whole video and its inference is a stream (decode a chunk, carry the
ConvLSTM's state into the next), with the outputs written as it ends. ``RunInference`` batches
elements into one model call and hands back predictions to write in a later step, which fits
neither: batching videos means nothing here, and its ``share_model_across_processes`` serves
the model from one process to others through a proxy, where our stateful streaming twin must
be called in the process that holds its state. ``Shared`` keeps one :class:`Predictor` per
worker process: the model loaded once (from a file or the MLflow store), shared by the
runner's threads and bundles, each concurrent video borrowing a streaming twin of its own
(a twin holds one video's recurrent state, so two threads cannot share one).

A video that fails is reported alone: its worker records the reason and goes on. Workers
report through small status files in ``--out`` (Beam outputs would reach the driver only at
the end, and not at all on every runner), which the driver follows to log ``3/10 videos``
and, at the end, reads to write ``catalogue.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
from apache_beam.utils import shared

from pipeline.core.annotations import VIDEO_COLUMN, spreadsheet_text
from pipeline.core.config import Config
from pipeline.core.errors import StageError
from pipeline.core.io import read_json, write_json
from pipeline.core.video import VideoError, list_videos
from pipeline.infra.beam import new_pipeline, worker_count
from pipeline.predict.loader import LoadedModel, load
from pipeline.predict.one_video import predict_video, tell_if_demo
from pipeline.predict.outputs import CATALOGUE_FILE, CatalogueRow, output_names, write_catalogue
from pipeline.predict.stream import StreamingModel

log = logging.getLogger(__name__)

STATUS_DIR = ".catalogue-status"
"""Folder in ``--out`` where workers leave one status file per video done (removed at the end)."""
POLL_S = 0.5
"""How often the driver looks for new status files."""


@dataclass(frozen=True)
class Entry:
    """A catalogue's video: as the catalogue lists it, where it is, and its output name."""

    listed: str
    path: Path
    name: str


def catalogue_entries(source: Path, extensions: tuple[str, ...]) -> list[Entry]:
    """The videos of a folder or of a CSV's ``video`` column, in the catalogue's order."""
    if source.is_dir():
        listed, skipped = list_videos(source, extensions)
        for file in skipped:
            log.info("%s: skipped (%s)", source / file.video, file.reason)
        if not listed:
            raise StageError(
                f"{source}: no video in it (decode.video_extensions: {' '.join(extensions)})"
            )
    elif source.suffix.lower() == ".csv":
        listed = _csv_videos(source)
    elif source.exists():
        raise StageError(f"{source}: --catalogue takes a folder of videos or a .csv file")
    else:
        raise StageError(f"{source}: no such folder or CSV file")
    paths = [source / video if source.is_dir() else source.parent / video for video in listed]
    names = output_names(paths)
    return [Entry(*fields) for fields in zip(listed, paths, names, strict=True)]


def _csv_videos(path: Path) -> list[str]:
    """The ``video`` cells of a catalogue CSV (saved as spreadsheets save them), blank rows
    left out."""
    reader = csv.DictReader(io.StringIO(spreadsheet_text(path), newline=""))
    header = [column.strip() for column in reader.fieldnames or ()]
    if VIDEO_COLUMN not in header:
        raise StageError(f"{path}: no {VIDEO_COLUMN!r} column (header: {','.join(header)!r})")
    reader.fieldnames = header
    videos = []
    for row in reader:
        if not any((row[column] or "").strip() for column in header):
            continue
        video = (row[VIDEO_COLUMN] or "").strip()
        if not video:
            raise StageError(f"{path} line {reader.line_num}: empty {VIDEO_COLUMN!r} cell")
        videos.append(video)
    if not videos:
        raise StageError(f"{path}: lists no video")
    return videos


class Predictor:
    """One worker process's model, loaded once, and the streaming twins its threads borrow."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.idle: queue.SimpleQueue[StreamingModel] = queue.SimpleQueue()

    @contextlib.contextmanager
    def streaming(self) -> Iterator[StreamingModel]:
        """A streaming twin no other thread is using, built on first need."""
        try:
            model = self.idle.get_nowait()
        except queue.Empty:
            model = StreamingModel(self.loaded.network)
        try:
            yield model
        finally:
            self.idle.put(model)


def shared_predictor(handle: shared.Shared, model: str | None, config: Config) -> Predictor:
    """This process's Predictor for ``model``, loaded on first use."""
    return handle.acquire(lambda: Predictor(load(model, config)), tag=model)


class PredictVideos(beam.DoFn):
    """Predict each ``(video path, output name)`` element with the worker's shared model and
    leave its status file: ``{"video": ..., "error": null}`` or the reason it failed."""

    def __init__(
        self,
        handle: shared.Shared,
        model: str | None,
        config: Config,
        out_dir: Path,
        html: bool,
    ) -> None:
        self.handle, self.model, self.config = handle, model, config
        self.out_dir, self.html = out_dir, html
        self.predictor: Predictor | None = None
        self.load_error: str | None = None

    def setup(self) -> None:
        try:
            self.predictor = shared_predictor(self.handle, self.model, self.config)
        except StageError as exc:  # e.g. the model's file is not on this worker's storage
            self.load_error = str(exc)

    def process(self, element: tuple[str, str]) -> None:
        video, name = element
        error = self.load_error
        if error is None:
            try:
                with self.predictor.streaming() as streaming:
                    predict_video(
                        Path(video),
                        name,
                        self.predictor.loaded,
                        streaming,
                        self.config,
                        self.out_dir,
                        self.html,
                        busy_workers=worker_count(self.config.beam),
                    )
            except VideoError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001  one video's failure must not stop the rest
                log.debug("%s: unexpected failure", video, exc_info=True)  # -v shows where
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        write_json(self.out_dir / STATUS_DIR / f"{name}.json", {"video": video, "error": error})


class Progress:
    """What the status files say so far: :meth:`poll` logs ``3/10 videos`` per video done and
    each failure, in one line naming the video, as workers report them."""

    def __init__(self, status_dir: Path, entries: list[Entry]) -> None:
        self.status_dir, self.entries = status_dir, entries
        self.reported: set[str] = set()

    def poll(self) -> None:
        for entry in self.entries:
            if entry.name in self.reported:
                continue
            status = read_json(self.status_dir / f"{entry.name}.json")
            if status is None:
                continue
            self.reported.add(entry.name)
            if status["error"] is not None:
                log.warning("%s: %s", entry.path, status["error"])
            log.info("%d/%d videos", len(self.reported), len(self.entries))


@contextlib.contextmanager
def polling(poll: Callable[[], None], interval_s: float = POLL_S) -> Iterator[None]:
    """Call ``poll`` every ``interval_s`` in a background thread while the block runs, and
    once more after it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            poll()
        poll()

    thread = threading.Thread(target=loop, name="catalogue-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_catalogue(
    config: Config, source: Path, model: str | None, out_dir: Path, html: bool
) -> None:
    """Predict every video of the catalogue on Beam, then write ``catalogue.csv``; StageError
    (after everything else is written) if any video failed."""
    entries = catalogue_entries(source, config.decode.video_extensions)
    out_dir = out_dir.absolute()
    status_dir = out_dir / STATUS_DIR
    shutil.rmtree(status_dir, ignore_errors=True)
    status_dir.mkdir(parents=True)
    handle = shared.Shared()
    # Loaded here first: a model that cannot load is one line before any work is sent out, and
    # the local runner's worker threads, in this process, share this very copy.
    loaded = shared_predictor(handle, model, config).loaded
    log.info("%d videos of %s on %s", len(entries), source, config.beam.runner)
    predict = PredictVideos(handle, model, config, out_dir, html)
    try:
        with polling(Progress(status_dir, entries).poll):
            pipeline_error = _run_pipeline(config, entries, predict)
        rows = [_row(entry, out_dir, status_dir, pipeline_error) for entry in entries]
    finally:
        shutil.rmtree(status_dir, ignore_errors=True)
    write_catalogue(out_dir / CATALOGUE_FILE, rows)
    tell_if_demo(loaded, (row.summary["drift"] for row in rows if row.summary is not None))
    failed = [row for row in rows if row.error is not None]
    log.info("wrote %d timeline(s) and %s to %s", len(rows) - len(failed), CATALOGUE_FILE, out_dir)
    if failed:
        raise StageError(
            f"{len(failed)} of {len(rows)} videos failed (each named above; the reasons are in "
            f"{out_dir / CATALOGUE_FILE}'s error column)"
        )


def _run_pipeline(config: Config, entries: list[Entry], predict: PredictVideos) -> str | None:
    """Run ``predict`` on each entry on the configured runner; why the pipeline stopped, if it
    did (a lost worker, say: the videos done so far are still summarised)."""
    elements = [(str(entry.path.absolute()), entry.name) for entry in entries]
    try:
        with new_pipeline(config.beam, partitions=len(elements)) as pipeline:
            (
                pipeline
                | "Videos" >> beam.Create(elements, reshuffle=True)
                | "Predict" >> beam.ParDo(predict)
            )
    except StageError:  # the runner's settings: one line, as for any stage
        raise
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        log.warning("the Beam pipeline stopped: %s", reason)
        return reason
    return None


def _row(entry: Entry, out_dir: Path, status_dir: Path, pipeline_error: str | None) -> CatalogueRow:
    status = read_json(status_dir / f"{entry.name}.json")
    if status is None:
        reason = "no worker reported on it" + (
            f" (the pipeline stopped: {pipeline_error})" if pipeline_error else " (worker lost?)"
        )
        log.warning("%s: %s", entry.path, reason)
        return CatalogueRow(entry.listed, entry.name, None, reason)
    if status["error"] is not None:
        return CatalogueRow(entry.listed, entry.name, None, status["error"])
    return CatalogueRow(entry.listed, entry.name, read_json(out_dir / f"{entry.name}.json"))
