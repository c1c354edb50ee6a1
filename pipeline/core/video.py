"""Reading video frames by time: probing, the sampling rule, the resize geometry, and the one
frame reader decode and predict share (decord first, PyAV for what decord cannot open).

The sampling rule, used by decode and predict alike: output frame ``k`` stands for time
``t_k = k / fps`` seconds from the first frame, for every ``t_k`` before the end of the video;
it is the source frame on screen at ``t_k``, i.e. the last one whose start time is ``<= t_k``.
Timestamps come from the container (decord's frame index, or PyAV's packets), so 29.97 fps,
variable frame rates and odd durations sample correctly; ``get_avg_fps`` is never used to place
frames.

Frames are resized keeping the aspect ratio, then either letterboxed (padded with black) or
centre-cropped to exactly ``height x width``, and returned channels_first ``(frames, 3, H, W)``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

log = logging.getLogger(__name__)

TIME_EPSILON = 1e-6
"""Seconds of slack when comparing sample times with frame timestamps (float rounding only)."""


class VideoError(Exception):
    """A video that cannot be read; the message says why in a few words."""


@dataclass(frozen=True)
class Probe:
    """What the container says about a video's first video stream."""

    width: int
    height: int
    frames: int
    duration_s: float | None
    codec: str
    rotation: int = 0
    """Degrees counter-clockwise the display matrix turns the picture (0, 90, 180 or 270)."""

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` as players show it: turned upright."""
        turned = self.rotation in (90, 270)
        return (self.height, self.width) if turned else (self.width, self.height)


def probe(path: str | Path) -> Probe:
    """Open ``path`` with PyAV and check it holds a decodable video stream.

    Raises VideoError for a missing, empty or unreadable file, no video stream or zero frames.
    Decoding one frame here costs little and catches files decord would abort on.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError("file not found")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            stream = container.streams.video[0]
            try:
                first = next(container.decode(stream), None)
            except av.FFmpegError as exc:
                raise VideoError(f"first frame does not decode ({exc.strerror or exc})") from None
            if first is None:
                raise VideoError("video stream has zero frames")
            return Probe(
                first.width,
                first.height,
                stream.frames,
                _duration(container, stream),
                stream.codec_context.name,
                round(first.rotation / 90) % 4 * 90,
            )
    except av.FFmpegError as exc:
        raise VideoError(f"not a readable video container ({exc.strerror or exc})") from None


def container_duration(path: str | Path) -> float | None:
    """The video's duration (seconds) from the container's header alone, or None if it has none
    or cannot be opened (decoding it then says why). Cheap: nothing is decoded."""
    try:
        with av.open(str(path)) as container:
            return _duration(container, container.streams.video[0])
    except (av.FFmpegError, IndexError, OSError):
        return None


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    declared = _stream_duration(stream)
    if declared is None and container.duration is not None:
        return container.duration / av.time_base
    return declared


def _stream_duration(stream: av.VideoStream) -> float | None:
    """The video stream's own declared duration (seconds), not the container's, which counts
    an audio track that may run longer."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


@dataclass(frozen=True)
class Skipped:
    """A file in a videos folder that is not taken for a video (decode, catalogue predict), and
    why."""

    video: str
    reason: str


def list_videos(folder: Path, extensions: tuple[str, ...]) -> tuple[list[str], list[Skipped]]:
    """The videos under ``folder`` (paths relative to it, sorted), and every other file."""
    videos, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if not p.is_dir()):
        video = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            skipped.append(Skipped(video, "hidden file"))
        elif not path.is_file():
            skipped.append(Skipped(video, "not a regular file"))
        elif path.suffix.lower() not in extensions:
            skipped.append(
                Skipped(
                    video,
                    f"not a video extension ({path.suffix or 'none'}; see decode.video_extensions)",
                )
            )
        else:
            videos.append(video)
    return videos, skipped


def decord_readable(path: str | Path, remux_formats: tuple[str, ...], folder: Path) -> Path:
    """``path``, or a copy of its video stream in a Matroska file in ``folder`` when its container
    is one of ``remux_formats`` (PyAV format names). decord seeks badly in containers without an
    index: measured on PyAV-written 2 s clips, an MPEG-TS file gave frames 32, 33, ... 49 and
    then 49 repeated for frames 0 to 49, an MPEG-PS (.mpg) file timestamps of -1e14 s; their
    Matroska copies decode exactly. Packets are copied, not re-encoded."""
    try:
        with av.open(str(path)) as source:
            if not set(source.format.name.split(",")) & set(remux_formats):
                return Path(path)
            copy_path = folder / "remuxed.mkv"
            stream = source.streams.video[0]
            with av.open(str(copy_path), "w", format="matroska") as copy:
                target = copy.add_stream_from_template(stream)
                for packet in source.demux(stream):
                    if packet.dts is not None:  # the demuxer's final flush packet
                        packet.stream = target
                        copy.mux(packet)
            return copy_path
    except (av.FFmpegError, ValueError) as exc:
        raise VideoError(f"cannot copy it into Matroska for decord ({exc})") from None


def sample_times(duration_s: float, fps: float) -> np.ndarray:
    """Times (seconds) of the output frames: ``k / fps`` for every one before ``duration_s``."""
    count = max(1, math.ceil(duration_s * fps - TIME_EPSILON))
    return np.arange(count, dtype=np.float64) / fps


def frames_at(frame_starts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the source frame on screen at each time (frame starts sorted, relative to 0)."""
    indices = np.searchsorted(frame_starts, times + TIME_EPSILON, side="right") - 1
    return np.clip(indices, 0, len(frame_starts) - 1)


@dataclass(frozen=True)
class Geometry:
    """How a source frame becomes ``height x width``: scale to ``scaled_*``, then pad or crop."""

    scaled_width: int
    scaled_height: int
    height: int
    width: int

    @classmethod
    def fit(
        cls,
        source_width: int,
        source_height: int,
        width: int,
        height: int,
        aspect: Literal["letterbox", "crop"],
    ) -> Geometry:
        pick = min if aspect == "letterbox" else max
        scale = pick(width / source_width, height / source_height)
        scaled_width = max(1, round(source_width * scale))
        scaled_height = max(1, round(source_height * scale))
        if aspect == "letterbox":
            scaled_width, scaled_height = min(scaled_width, width), min(scaled_height, height)
        else:
            scaled_width, scaled_height = max(scaled_width, width), max(scaled_height, height)
        return cls(scaled_width, scaled_height, height, width)

    def place(self, scaled: np.ndarray) -> np.ndarray:
        """Letterbox or centre-crop ``(n, scaled_h, scaled_w, 3)`` to ``(n, 3, height, width)``."""
        frames = np.zeros((scaled.shape[0], 3, self.height, self.width), dtype=np.uint8)
        rows, cols = min(self.height, self.scaled_height), min(self.width, self.scaled_width)
        top_out, left_out = (self.height - rows) // 2, (self.width - cols) // 2
        top_in, left_in = (self.scaled_height - rows) // 2, (self.scaled_width - cols) // 2
        window = scaled[:, top_in : top_in + rows, left_in : left_in + cols]
        frames[:, :, top_out : top_out + rows, left_out : left_out + cols] = window.transpose(
            0, 3, 1, 2
        )
        return frames


@dataclass(frozen=True)
class Sampling:
    """The frames a video yields: their times, source indices, the video's duration, and which
    decoder reads it (``decord`` or ``pyav``)."""

    times: np.ndarray
    indices: np.ndarray
    duration_s: float
    source_frames: int
    decoder: str
    missing_s: float = 0.0
    """Seconds the header declares past the last readable frame (a file cut short), else 0."""
    source_size: tuple[int, int] | None = None
    """The source's ``(width, height)`` as players show it (upright); set by
    :func:`sample_video`, which probes it."""


class _DecordFrames:
    """A video opened with decord: its frames' start times and contiguous reads of them."""

    name = "decord"

    def __init__(self, path: Path, geometry: Geometry, threads: int, fault_tolerance: float):
        import decord  # imported here: decord's native library is only loaded where it reads

        decord.logging.set_level(_ffmpeg_level(decord.logging.WARNING, decord.logging.QUIET))
        self._errors = (RuntimeError, decord.DECORDError)
        self._path = path
        try:
            self._reader = decord.VideoReader(
                str(path),
                width=geometry.scaled_width,
                height=geometry.scaled_height,
                num_threads=threads,
                fault_tol=fault_tolerance,
            )
            stamps = self._reader.get_frame_timestamp(range(len(self._reader)))
        except self._errors as exc:
            raise VideoError(f"decord cannot open it ({_first_line(exc)})") from None
        self.starts = stamps[:, 0] - stamps[0, 0]
        self.duration_s = float(stamps[-1, 1] - stamps[0, 0])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Source frames ``start`` to ``stop`` (exclusive), ``(n, scaled_h, scaled_w, 3)``."""
        try:
            return self._reader.get_batch(list(range(start, stop))).asnumpy()
        except self._errors as exc:
            raise VideoError(
                f"decoding failed {self._where(start, stop)} ({_first_line(exc)})"
            ) from None

    def _where(self, start: int, stop: int) -> str:
        """Where the batch ``start`` to ``stop`` broke: its error does not say which frame, and
        decord's reader cannot tell, since its thread reads packets ahead of the frame asked
        for (a fresh reader, even single-threaded, reported frame 0 for a packet at frame 35
        in about one run of ten under load)."""
        broken = first_broken_frame(self._path, start)
        if broken is not None:
            return f"at source frame {broken} ({self.starts[broken]:.3f} s)"
        first, last = start, stop - 1
        return (
            f"in source frames {first}-{last} ({self.starts[first]:.3f}-{self.starts[last]:.3f} s)"
        )

    def close(self) -> None:
        del self._reader  # decord leaks readers that stay referenced (dmlc/decord#1, #323)
        gc.collect()


def first_broken_frame(path: Path, start: int = 0) -> int | None:
    """The first source frame (presentation order, as decord numbers them) from ``start`` on
    whose packet FFmpeg rejects, by PyAV packet by packet in decoding order; else the first
    before ``start`` (a reference the range needed); None when every packet decodes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
    frame_of = {pts: index for index, pts in enumerate(times)}
    broken = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            try:
                packet.decode()
            except av.error.FFmpegError:
                broken.append(frame_of[packet.pts])
                if broken[-1] >= start:
                    return broken[-1]
    return broken[0] if broken else None


class _PyAVFrames:
    """A video opened with PyAV (FFmpeg 7 with dav1d): for what decord's FFmpeg cannot read, AV1
    first among them. Start times come from the packets (nothing decoded); reads decode
    sequentially, seeking back to a key frame only when a read starts behind or far ahead."""

    name = "pyav"

    def __init__(self, path: Path, geometry: Geometry, threads: int, rotation: int):
        av.logging.set_level(_ffmpeg_level(av.logging.WARNING, None))  # to Python's logging
        self._turns = rotation // 90
        self._stored_size = (  # (width, height) to scale the stored picture to
            (geometry.scaled_height, geometry.scaled_width)
            if self._turns % 2
            else (geometry.scaled_width, geometry.scaled_height)
        )
        try:
            self._container = av.open(str(path))
            self._stream = stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            packets = [
                (packet.pts, packet.duration or 0)
                for packet in self._container.demux(stream)
                if packet.pts is not None and packet.size and not packet.is_corrupt
            ]
        except (av.FFmpegError, IndexError) as exc:
            raise VideoError(f"PyAV cannot open it ({exc})") from None
        if not packets:
            raise VideoError("PyAV finds no timestamped video packet")
        packets.sort()
        pts = np.array([stamp for stamp, _ in packets], dtype=np.int64)
        base = float(stream.time_base)
        self._index = {int(stamp): index for index, stamp in enumerate(pts)}
        self.starts = (pts - pts[0]) * base
        self.duration_s = float((pts[-1] + packets[-1][1] - pts[0]) * base)
        self._frames: Iterator[av.VideoFrame] | None = None
        self._next = len(pts)  # the source frame the decoder yields next: none until a seek

    def read(self, start: int, stop: int) -> np.ndarray:
        """Source frames ``start`` to ``stop`` (exclusive), ``(n, scaled_h, scaled_w, 3)``."""
        if not self._next <= start < self._next + _SEEK_AHEAD_FRAMES:
            self._seek(start)
        picked = []
        try:
            while self._next < stop:
                frame = next(self._frames, None)
                if frame is None:
                    break
                index = self._index.get(frame.pts, self._next)
                self._next = index + 1
                if index >= start:
                    picked.append(self._rgb(frame))
        except av.FFmpegError as exc:
            raise VideoError(
                f"decoding failed after source frame {self._next - 1} "
                f"({self.starts[max(0, self._next - 1)]:.3f} s; {exc})"
            ) from None
        if len(picked) != stop - start:
            raise VideoError(f"decoded {len(picked)} of source frames {start}-{stop - 1}")
        return np.stack(picked)

    def _seek(self, start: int) -> None:
        target = int(round(self.starts[start] / float(self._stream.time_base))) + min(self._index)
        self._container.seek(target, backward=True, any_frame=False, stream=self._stream)
        self._frames = self._decoded()
        self._next = 0

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Frames in presentation order; a corrupt packet (the cut end of a file) is skipped,
        as the packet list skips it. The demuxer's last, empty packet flushes the decoder."""
        for packet in self._container.demux(self._stream):
            if not packet.is_corrupt:
                yield from packet.decode()

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """Scaled, RGB and upright (decord turns pictures itself; PyAV leaves that to us)."""
        width, height = self._stored_size
        rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR")
        return np.rot90(rgb.to_ndarray(), self._turns)

    def close(self) -> None:
        self._container.close()


_SEEK_AHEAD_FRAMES = 256
"""PyAV reads on through a gap of fewer source frames than this instead of seeking."""


def _ffmpeg_level(shown: int, hidden: int) -> int:
    """FFmpeg's own log lines: shown at ``-v`` (this module's logger at DEBUG), else hidden."""
    return shown if log.isEnabledFor(logging.DEBUG) else hidden


def read_frames(
    path: str | Path,
    fps: float,
    geometry: Geometry,
    chunk_frames: int,
    threads: int = 1,
    fault_tolerance: float = -1,
    remux_formats: tuple[str, ...] = (),
    first_frame: int = 0,
    stop_frame: int | None = None,
    allow_truncated: bool = True,
    rotation: int = 0,
    decoder: Literal["auto", "pyav"] = "auto",
) -> tuple[Sampling, Iterator[np.ndarray]]:
    """Open ``path`` and sample it at ``fps``: with decord, or with PyAV where decord cannot
    open it or ``decoder`` is ``pyav`` (``Sampling.decoder`` says which).

    Returns the sampling plan of the whole video and an iterator of channels_first uint8 chunks
    of its output frames ``first_frame`` to ``stop_frame`` (exclusive; None: to the end), cut at
    multiples of ``chunk_frames`` (bounded memory, whatever the video's length), so that any
    range starting at such a multiple gives the same chunks as the whole video does. Both
    decoders seek to the key frame before the range. ``fault_tolerance`` is decord's
    ``fault_tol``: the share (< 1) or count (> 1) of corrupt frames decord may silently replace
    by a neighbour before it raises; negative disables the check. Containers in
    ``remux_formats`` are read by decord from a temporary Matroska copy (:func:`decord_readable`).
    A file cut short (its frames end more than :data:`TRUNCATED_FRAMES` frames before the
    duration its header declares) gives its readable frames and a warning, or, unless
    ``allow_truncated``, a VideoError. Pictures stored turned (:attr:`Probe.rotation`, degrees
    counter-clockwise) come out upright, as players show them; ``geometry`` fits the upright
    size (decord turns them itself, PyAV's are turned here).
    """
    scratch = tempfile.TemporaryDirectory(prefix="decode-")
    try:
        source = _open(
            path,
            geometry,
            threads,
            fault_tolerance,
            remux_formats,
            Path(scratch.name),
            rotation,
            decoder,
        )
    except VideoError:
        scratch.cleanup()
        raise
    if not source.duration_s > 0:
        source.close()
        scratch.cleanup()
        raise VideoError(f"frame timestamps give no positive duration ({source.duration_s})")
    missing_s = _missing_seconds(path, source.starts, source.duration_s)
    if missing_s and not allow_truncated:
        source.close()
        scratch.cleanup()
        raise VideoError(
            f"{cut_short_message(source.duration_s, missing_s)} (decode.allow_truncated is false)"
        )
    if missing_s and first_frame == 0:
        log.warning(
            "%s: %s; its readable frames are used",
            path,
            cut_short_message(source.duration_s, missing_s),
        )
    times = sample_times(source.duration_s, fps)
    sampling = Sampling(
        times,
        frames_at(source.starts, times),
        source.duration_s,
        len(source.starts),
        source.name,
        missing_s,
    )

    def chunks() -> Iterator[np.ndarray]:
        try:
            end = len(sampling.indices) if stop_frame is None else stop_frame
            for first in range(first_frame, min(end, len(sampling.indices)), chunk_frames):
                wanted = sampling.indices[first : min(first + chunk_frames, end)]
                picked = []
                # Contiguous reads decode sequentially; decord's get_batch on sparse indices
                # seeks and measured 1.4x slower here. Blocks of chunk_frames bound memory.
                for start in range(wanted[0], wanted[-1] + 1, chunk_frames):
                    stop = min(start + chunk_frames, wanted[-1] + 1)
                    inside = wanted[(wanted >= start) & (wanted < stop)]
                    if len(inside):
                        picked.append(source.read(start, stop)[inside - start])
                yield geometry.place(np.concatenate(picked))
        finally:
            source.close()
            scratch.cleanup()

    return sampling, chunks()


TRUNCATED_FRAMES = 2
"""Frames a video may end short of its header's duration before it counts as cut short (muxers
round the declared duration; a file cut short lacks far more)."""


def _missing_seconds(path: str | Path, starts: np.ndarray, duration_s: float) -> float:
    """How far the readable frames end before the video stream's declared duration (0 if not
    measurably, or if the header declares none)."""
    try:
        with av.open(str(path)) as container:
            declared = _stream_duration(container.streams.video[0])
    except (av.FFmpegError, IndexError, OSError):
        return 0.0
    if declared is None:
        return 0.0
    interval = float(np.median(np.diff(starts))) if len(starts) > 1 else duration_s
    missing = declared - duration_s
    return round(missing, 6) if missing > TRUNCATED_FRAMES * interval else 0.0


def cut_short_message(duration_s: float, missing_s: float) -> str:
    """What a file cut short is told by, in one phrase."""
    return (
        f"the video ends early: frames stop at {duration_s:.2f} s of the "
        f"{duration_s + missing_s:.2f} s its header declares ({missing_s:.2f} s missing)"
    )


def sample_video(
    path: str | Path,
    fps: float,
    height: int,
    width: int,
    aspect: Literal["letterbox", "crop"],
    chunk_frames: int,
    **reading: Any,
) -> tuple[Sampling, Iterator[np.ndarray]]:
    """:func:`read_frames` of ``path`` probed first (PyAV names what is wrong where decord
    might abort), its frames upright and fitted into ``height x width``; ``reading`` are
    read_frames' other options. Decode's workers and predict both read videos through here."""
    info = probe(path)
    geometry = Geometry.fit(*info.display_size, width, height, aspect)
    sampling, chunks = read_frames(
        path, fps, geometry, chunk_frames, rotation=info.rotation, **reading
    )
    return dataclasses.replace(sampling, source_size=info.display_size), chunks


def _open(
    path: str | Path,
    geometry: Geometry,
    threads: int,
    fault_tolerance: float,
    remux_formats: tuple[str, ...],
    scratch: Path,
    rotation: int,
    decoder: Literal["auto", "pyav"],
) -> _DecordFrames | _PyAVFrames:
    """decord first (the faster, measured in ``make bench-decode``); PyAV where it fails, for
    pictures stored turned by 90 or 270 degrees, and when ``decoder`` asks for it."""
    try:
        if decoder == "pyav":
            raise VideoError("decode.decoder is pyav")
        if rotation % 180:  # measured: decord turns it, then get_batch fails on the sizes
            raise VideoError("decord cannot read pictures stored turned a quarter")
        readable = decord_readable(path, remux_formats, scratch)
        return _DecordFrames(readable, geometry, threads, fault_tolerance)
    except VideoError as decord_error:
        log.debug("%s: %s; reading it with PyAV", path, decord_error)
        try:
            return _PyAVFrames(Path(path), geometry, threads, rotation)
        except VideoError as pyav_error:
            raise VideoError(f"{decord_error}; {pyav_error}") from None


_DMLC_PREFIX = re.compile(r"\[[\d:]+\] \S+:\d+: ")


def _first_line(exc: BaseException) -> str:
    """decord's error, one line, without its timestamp and source-file prefixes."""
    lines = [_DMLC_PREFIX.sub("", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    return lines[0][:200] if lines else type(exc).__name__
