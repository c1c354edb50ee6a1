"""The visual grammar of the demo corpus: how each genre looks and how it moves.

A shot is a picture (a *tile*, drawn once per shot from the genre's look) seen through a moving
camera: frame ``i`` is the tile shifted cyclically by the camera offset at that frame's time.
A cyclic shift only permutes pixels, so every frame of a shot has exactly the colour histogram
of its tile, whatever the motion. Two genres that share a look therefore give single frames
from one and the same distribution: only the offsets over time (the motion) tell them apart.

Looks: ``sunny`` (comedy, musical), ``night`` (horror, suspense), ``blaze`` (action) and
``muted`` (other). Sizes are fractions of the frame, speeds frames (widths or heights) per
second, so a look and a motion read the same at any resolution. The motions that tell the
look-alike pairs apart survive the decode stage's default view (8 fps, 64x64): no rhythm is
faster than 1.5 Hz (the Nyquist limit of 8 fps is 4 Hz), a still lasts at least 0.3 s
(2 samples), and each move is one pixel or more per sample at 64 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Range = tuple[float, float]
Rng = np.random.Generator
Offsets = tuple[np.ndarray, np.ndarray]


def _uniform(rng: Rng, bounds: Range) -> float:
    return float(rng.uniform(*bounds))


def _colours(rng: Rng, palette: np.ndarray, count: int, jitter: float):
    """``count`` colours from ``palette`` rows, each moved by Gaussian ``jitter`` per channel."""
    picked = palette[rng.integers(len(palette), size=count)]
    return picked + rng.normal(0.0, jitter, size=picked.shape)


def _torus_distance(grid: np.ndarray, centre: float, period: int) -> np.ndarray:
    """Distance along one axis on a circle of ``period`` pixels: shapes wrap seamlessly."""
    distance = np.abs(grid - centre) % period
    return np.minimum(distance, period - distance)


def _count(rng: Rng, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _background(rng: Rng, palette, jitter: float, height: int, width: int):
    """A float ``(height, width, 3)`` canvas filled with one jittered colour of ``palette``."""
    canvas = np.empty((height, width, 3))
    canvas[:] = _colours(rng, np.array(palette, float), 1, jitter)[0]
    return canvas


def _disc(rng: Rng, radius: float, height: int, width: int) -> np.ndarray:
    """Mask of a disc of ``radius`` (fraction of the height) at a random centre, wrapping."""
    dy = _torus_distance(np.arange(height)[:, None], rng.uniform(0, height), height)
    dx = _torus_distance(np.arange(width)[None, :], rng.uniform(0, width), width)
    return dy**2 + dx**2 <= (radius * height) ** 2


def _to_uint8(tile: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(tile), 0, 255).astype(np.uint8)


class Look(Protocol):
    def tile(self, rng: Rng, height: int, width: int) -> np.ndarray:
        """A seamless ``(height, width, 3)`` uint8 RGB picture for one shot."""


@dataclass(frozen=True)
class Blobs:
    """Round blobs of saturated colour on a light background (cartoon daylight)."""

    background: tuple[tuple[int, int, int], ...]
    colours: tuple[tuple[int, int, int], ...]
    count: tuple[int, int]
    radius: Range
    jitter: float

    def tile(self, rng: Rng, height: int, width: int) -> np.ndarray:
        tile = _background(rng, self.background, self.jitter, height, width)
        count = _count(rng, self.count)
        for colour in _colours(rng, np.array(self.colours, float), count, self.jitter):
            tile[_disc(rng, _uniform(rng, self.radius), height, width)] = colour
        return _to_uint8(tile)


@dataclass(frozen=True)
class Bars:
    """Dark vertical bars (trees, pillars) over a dark ground, and one pale disc (a moon)."""

    background: tuple[tuple[int, int, int], ...]
    colours: tuple[tuple[int, int, int], ...]
    disc: tuple[int, int, int]
    count: tuple[int, int]
    bar_width: Range
    disc_radius: Range
    jitter: float

    def tile(self, rng: Rng, height: int, width: int) -> np.ndarray:
        tile = _background(rng, self.background, self.jitter, height, width)
        disc = _colours(rng, np.array([self.disc], float), 1, self.jitter)[0]
        tile[_disc(rng, _uniform(rng, self.disc_radius), height, width)] = disc
        cols = np.arange(width)
        for colour in _colours(
            rng, np.array(self.colours, float), _count(rng, self.count), self.jitter
        ):
            half = _uniform(rng, self.bar_width) * width / 2
            tile[:, _torus_distance(cols, rng.uniform(0, width), width) <= half] = colour
        return _to_uint8(tile)


@dataclass(frozen=True)
class Stripes:
    """High-contrast diagonal streaks of fire colours on black (explosions, speed lines)."""

    colours: tuple[tuple[int, int, int], ...]
    waves: tuple[int, int]
    duty: Range
    jitter: float

    def tile(self, rng: Rng, height: int, width: int) -> np.ndarray:
        rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
        across = _count(rng, self.waves)
        down = _count(rng, self.waves) * rng.choice([-1, 1])
        phase = (across * cols / width + down * rows / height + rng.uniform()) % 1.0
        colours = _colours(rng, np.array(self.colours, float), 2, self.jitter)
        lit = phase < _uniform(rng, self.duty)
        tile = np.zeros((height, width, 3))
        tile[lit] = colours[0]
        tile[lit & (phase < _uniform(rng, self.duty) / 3)] = colours[1]
        return _to_uint8(tile)


@dataclass(frozen=True)
class Bands:
    """Soft horizontal bands (sky, land) with a few low-contrast blocks: everyday scenes."""

    colours: tuple[tuple[int, int, int], ...]
    bands: tuple[int, int]
    blocks: tuple[int, int]
    block_size: Range
    jitter: float

    def tile(self, rng: Rng, height: int, width: int) -> np.ndarray:
        palette = np.array(self.colours, float)
        count = _count(rng, self.bands)
        edges = np.sort(rng.uniform(0, height, size=count))
        band = np.searchsorted(edges, np.arange(height)) % count
        tile = np.repeat(_colours(rng, palette, count, self.jitter)[band][:, None], width, axis=1)
        blocks = _count(rng, self.blocks)
        rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
        for colour in _colours(rng, palette, blocks, self.jitter):
            half_h = _uniform(rng, self.block_size) * height / 2
            half_w = _uniform(rng, self.block_size) * width / 2
            inside = (_torus_distance(rows, rng.uniform(0, height), height) <= half_h) & (
                _torus_distance(cols, rng.uniform(0, width), width) <= half_w
            )
            tile[inside] = colour
        return _to_uint8(tile)


class Motion(Protocol):
    def offsets(
        self, rng: Rng, times: np.ndarray, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Camera offsets ``(dy, dx)`` in pixels at ``times`` (seconds since the shot began)."""


@dataclass(frozen=True)
class Rush:
    """Fast, steady travel to the left (the picture streams right to left)."""

    speed: Range

    def offsets(self, rng: Rng, times: np.ndarray, height: int, width: int) -> Offsets:
        dx = _uniform(rng, self.speed) * width * times
        return np.zeros_like(times), dx


@dataclass(frozen=True)
class Creep:
    """A slow, steady drift in one random direction (a camera dolly)."""

    speed: Range

    def offsets(self, rng: Rng, times: np.ndarray, height: int, width: int) -> Offsets:
        speed, angle = _uniform(rng, self.speed), rng.uniform(0, 2 * np.pi)
        return speed * height * np.sin(angle) * times, speed * width * np.cos(angle) * times


@dataclass(frozen=True)
class Jolt:
    """Stillness broken by sudden jumps to a random new framing (jump scares)."""

    still_s: Range

    def offsets(self, rng: Rng, times: np.ndarray, height: int, width: int) -> Offsets:
        end = float(times[-1]) if len(times) else 0.0
        jumps = [0.0]
        while jumps[-1] <= end:
            jumps.append(jumps[-1] + _uniform(rng, self.still_s))
        framings = rng.uniform(0, 1, size=(len(jumps), 2)) * (height, width)
        held = np.searchsorted(np.array(jumps), times, side="right") - 1
        return framings[held, 0], framings[held, 1]


@dataclass(frozen=True)
class Swing:
    """Periodic movement along one axis, ``amplitude`` a fraction of the frame along it.

    ``hop`` rises and falls back (``|sin|``: slapstick bounces); ``sway`` swings both ways
    (``sin``: dancing to a beat). ``period_s`` is one full hop or one full swing.
    """

    axis: Literal["vertical", "horizontal"]
    wave: Literal["hop", "sway"]
    amplitude: Range
    period_s: Range

    def offsets(self, rng: Rng, times: np.ndarray, height: int, width: int) -> Offsets:
        size = height if self.axis == "vertical" else width
        amplitude, period = _uniform(rng, self.amplitude) * size, _uniform(rng, self.period_s)
        phase = times / period + rng.uniform()
        wave = np.abs(np.sin(np.pi * phase)) if self.wave == "hop" else np.sin(2 * np.pi * phase)
        still = np.zeros_like(times)
        return (amplitude * wave, still) if self.axis == "vertical" else (still, amplitude * wave)


@dataclass(frozen=True)
class Style:
    """A genre's visual language: its look, its motion, and its cutting pace.

    ``cut_pace`` scales ``synth.shot_s``: 0.5 gives shots half as long (rapid cutting).
    ``look_name`` is shared by genres that look alike frame by frame.
    """

    look_name: str
    look: Look
    motion: Motion
    cut_pace: float


SUNNY = Blobs(
    background=((236, 222, 170), (240, 206, 196), (214, 232, 240)),
    colours=((240, 120, 40), (230, 60, 120), (250, 200, 30), (60, 150, 230), (120, 200, 80)),
    count=(5, 9),
    radius=(0.1, 0.22),
    jitter=10.0,
)
NIGHT = Bars(
    background=((18, 22, 40), (24, 30, 36), (30, 24, 44)),
    colours=((8, 10, 16), (44, 52, 80), (60, 70, 96)),
    disc=(176, 184, 200),
    count=(3, 6),
    bar_width=(0.04, 0.14),
    disc_radius=(0.08, 0.16),
    jitter=5.0,
)
BLAZE = Stripes(
    colours=((230, 40, 20), (250, 140, 20), (255, 220, 60)),
    waves=(1, 3),
    duty=(0.3, 0.55),
    jitter=12.0,
)
MUTED = Bands(
    colours=((140, 150, 150), (110, 120, 96), (150, 136, 112), (90, 96, 104), (170, 170, 160)),
    bands=(2, 4),
    blocks=(2, 5),
    block_size=(0.1, 0.3),
    jitter=8.0,
)

GRAMMAR: dict[str, Style] = {
    "comedy": Style(
        "sunny", SUNNY, Swing("vertical", "hop", amplitude=(0.15, 0.25), period_s=(0.7, 1.0)), 1.0
    ),
    "action": Style("blaze", BLAZE, Rush(speed=(0.6, 1.0)), 0.5),
    "horror": Style("night", NIGHT, Jolt(still_s=(0.3, 0.7)), 1.0),
    "suspense": Style("night", NIGHT, Creep(speed=(0.15, 0.3)), 1.0),
    "musical": Style(
        "sunny",
        SUNNY,
        Swing("horizontal", "sway", amplitude=(0.15, 0.25), period_s=(0.8, 1.2)),
        1.0,
    ),
    "other": Style("muted", MUTED, Creep(speed=(0.02, 0.05)), 1.0),
}


def shifted(tile: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Frames ``(n, h, w, 3)``: ``tile`` shifted cyclically by each ``(dy, dx)`` (rounded)."""
    height, width = tile.shape[:2]
    rows = (np.arange(height)[None, :] + np.rint(dy).astype(np.int64)[:, None]) % height
    cols = (np.arange(width)[None, :] + np.rint(dx).astype(np.int64)[:, None]) % width
    return tile[rows[:, :, None], cols[:, None, :]]


def scene(genre: str, rng: Rng, times: np.ndarray, height: int, width: int) -> np.ndarray:
    """One shot of ``genre``: frames at ``times`` (seconds since the shot began)."""
    style = GRAMMAR[genre]
    tile = style.look.tile(rng, height, width)
    return shifted(tile, *style.motion.offsets(rng, times, height, width))


@dataclass(frozen=True)
class TitleCard:
    """White text-like blocks (words in lines) centred on black."""

    lines: tuple[int, int]
    words: tuple[int, int]
    line_height: float
    word_width: Range
    level: tuple[int, int]

    def frame(self, rng: Rng, height: int, width: int) -> np.ndarray:
        card = np.zeros((height, width, 3), np.uint8)
        lines = _count(rng, self.lines)
        step = max(2, round(self.line_height * height))
        top = (height - (2 * lines - 1) * step) // 2
        for line in range(lines):
            words = _count(rng, self.words)
            widths = np.maximum(1, np.rint(rng.uniform(*self.word_width, size=words) * width))
            gap = max(1, step // 2)
            left = max(0, (width - int(widths.sum()) - gap * (words - 1)) // 2)
            y = max(0, top + 2 * line * step)
            for word in widths.astype(int):
                card[y : y + step, left : min(width, left + word)] = rng.integers(*self.level)
                left += word + gap
        return card


TITLE_CARD = TitleCard(
    lines=(1, 3), words=(2, 5), line_height=0.07, word_width=(0.05, 0.14), level=(200, 256)
)


def title_card(rng: Rng, frames: int, height: int, width: int) -> np.ndarray:
    """A still title card held for ``frames`` frames."""
    return np.repeat(TITLE_CARD.frame(rng, height, width)[None], frames, axis=0)


def black(frames: int, height: int, width: int) -> np.ndarray:
    return np.zeros((frames, height, width, 3), np.uint8)
