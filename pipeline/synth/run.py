"""Stage ``synth``: the built-in demo corpus of procedural trailers (real H.264 mp4 files).

A trailer is a run of genre *blocks* separated by a title card or black frames; a block is one
or more shots of its genre separated by hard cuts, and a block with a second genre shows both
side by side (split screen), so that moment carries two labels. How each genre looks and moves
is the grammar in ``pipeline/synth/grammar.py``; four genres come in look-alike pairs that only
motion tells apart (comedy/musical, horror/suspense).

The corpus is planned first (``plan_corpus``: sizes, rates, timelines, splits and genres, all
cheap) and drawn and encoded afterwards, one trailer at a time. Genres are dealt per split from
shuffled decks of all six, and blocks get a second genre when a split has too few blocks for
six, so that every split holds every genre whenever its blocks allow it.

Everything derives from ``config.seed``: the same seed and config give byte-identical
``annotations.csv`` and ``splits.csv`` and identical decoded frames (x264 runs on one thread,
so its output does not depend on the machine's core count).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from tqdm import tqdm

from pipeline import GENRES, SPLITS
from pipeline.core.annotations import ANNOTATION_COLUMNS, SPLIT_COLUMNS, write_synth_receipt
from pipeline.core.config import Config, SynthConfig
from pipeline.core.errors import StageError
from pipeline.core.io import atomic_open, atomic_path, remove_leftovers
from pipeline.synth.grammar import GRAMMAR, black, scene, title_card

log = logging.getLogger(__name__)

ENCODER_OPTIONS = {"threads": "1"}
"""x264 on one thread: its bitstream then depends on nothing but the frames and the options."""

MICROSECONDS = 10**6
"""Annotation times are written in whole microseconds, rounded down (see ``seconds_text``)."""

_LAYOUT, _SPLITS, _GENRES, _CUTS, _TRAILER_GENRES = range(5)
"""Independent random streams: new split fractions keep each trailer's size, rate and timeline."""


@dataclass(frozen=True)
class Part:
    """Frames ``[start, stop)`` of a trailer: a genre block, a title card or black.

    A block's ``cuts`` are the first frames of its second, third... shots; ``seed`` draws it.
    """

    kind: Literal["block", "title", "black"]
    start: int
    stop: int
    seed: int
    genres: tuple[str, ...] = ()
    cuts: tuple[int, ...] = ()

    def shots(self) -> list[tuple[int, int]]:
        edges = [self.start, *self.cuts, self.stop]
        return list(zip(edges[:-1], edges[1:], strict=True))


@dataclass(frozen=True)
class TrailerPlan:
    """Everything needed to draw one trailer and to label it."""

    trailer_id: str
    split: str
    rate: Fraction
    width: int
    height: int
    frames: int
    parts: tuple[Part, ...]

    @property
    def duration_s(self) -> Fraction:
        return self.frames / self.rate

    @property
    def blocks(self) -> list[Part]:
        return [part for part in self.parts if part.kind == "block"]

    def segments(self) -> list[tuple[Fraction, Fraction, str]]:
        """``(start_s, end_s, genre)`` per genre per block, exact, in time then GENRES order."""
        rows = [
            (part.start / self.rate, part.stop / self.rate, genre)
            for part in self.blocks
            for genre in part.genres
        ]
        return sorted(rows, key=lambda row: (row[0], GENRES.index(row[2])))


def frame_rate(fps: float) -> Fraction:
    """The exact rate for ``fps``: NTSC rates (29.97, 23.976, 59.94) become ``n*1000/1001``."""
    ntsc = round(fps * 1.001)
    if fps != round(fps) and math.isclose(fps * 1.001, ntsc, abs_tol=1e-3):
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def seconds_text(seconds: Fraction) -> str:
    """Fixed six decimals, rounded *down*: a boundary never moves after the frame it marks.

    Rounding down keeps every segment inside its video, and a sample taken exactly at a shot
    boundary gets the label of the shot it shows (decode picks the frame on screen then).
    """
    micro = math.floor(seconds * MICROSECONDS)
    return f"{micro // MICROSECONDS}.{micro % MICROSECONDS:06d}"


def trailer_ids(count: int) -> list[str]:
    """``"000"``, ``"001"``... zero-padded to a common width (at least three digits)."""
    digits = max(3, len(str(count - 1)))
    return [f"{index:0{digits}d}" for index in range(count)]


def _frames(seconds: float, rate: Fraction) -> int:
    return max(1, round(seconds * rate))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**63))


def plan_layout(trailer_id: str, settings: SynthConfig, rng: np.random.Generator) -> TrailerPlan:
    """Rate, frame size, length and the timeline of blocks and gaps (no genres yet).

    Blocks and gaps alternate from the first frame; a block that the end cuts shorter than
    ``block_s``'s minimum joins the gap before it (trailers end on a card or black).
    """
    rate = frame_rate(float(rng.choice(settings.fps_choices)))
    # Even sizes: yuv420p halves both for its colour planes.
    width = 2 * round(int(rng.integers(settings.width[0], settings.width[1] + 1)) / 2)
    aspect = float(rng.choice(settings.aspect_ratios))
    height = max(2, 2 * round(width / aspect / 2))
    frames = _frames(rng.uniform(*settings.duration_s), rate)
    shortest_block = _frames(settings.block_s[0], rate)
    parts: list[Part] = []
    position = 0
    while position < frames:
        if parts and parts[-1].kind == "block":
            kind = "title" if rng.random() < settings.title_card_prob else "black"
            length = _frames(settings.title_card_s if kind == "title" else settings.black_s, rate)
        else:
            kind, length = "block", _frames(rng.uniform(*settings.block_s), rate)
        stop = min(frames, position + length)
        if kind == "block" and stop - position < shortest_block and parts:
            parts[-1] = replace(parts[-1], stop=frames)
            break
        parts.append(Part(kind, position, stop, _seed(rng)))
        position = stop
    return TrailerPlan(trailer_id, "", rate, width, height, frames, tuple(parts))


def assign_splits(
    ids: list[str], fractions: tuple[float, ...], rng: np.random.Generator
) -> dict[str, str]:
    """Trailer id -> split: every split gets at least one trailer, the rest in proportion."""
    val, test = (max(1, round(len(ids) * fraction)) for fraction in fractions[1:])
    train = len(ids) - val - test
    if train < 1:
        raise StageError(
            f"synth.split_fractions {list(fractions)}: {len(ids)} trailers leave none for train"
        )
    order = rng.permutation(len(ids))
    names = ["train"] * train + ["val"] * val + ["test"] * test
    return {ids[index]: name for index, name in zip(order, names, strict=True)}


def deal_genres(
    blocks: int,
    second_genre_prob: float,
    rng: np.random.Generator,
    pool: tuple[str, ...] = GENRES,
) -> list[tuple[str, ...]]:
    """Genres from ``pool`` for ``blocks`` consecutive blocks (of a split, or of one trailer),
    one or two each.

    Genres come from shuffled decks of the pool, so the first labels are all different; blocks
    get a second genre at random, and more of them when there are fewer blocks than genres in
    the pool. A block never carries the same genre twice (nor two with a pool of one).
    """
    dual = (rng.random(blocks) < second_genre_prob) & (len(pool) > 1)
    missing = len(pool) - blocks - int(dual.sum())
    if missing > 0:
        singles = np.flatnonzero(~dual)
        dual[rng.permutation(singles)[:missing]] = True
    deck: list[str] = []
    dealt = []
    for pair in dual:
        if len(deck) < 2 * len(pool):
            deck += [pool[i] for i in rng.permutation(len(pool))]
        first = deck.pop(0)
        if not pair:
            dealt.append((first,))
            continue
        second = deck.pop(next(i for i, genre in enumerate(deck) if genre != first))
        dealt.append(tuple(sorted((first, second), key=GENRES.index)))
    return dealt


def cut_shots(
    block: Part, rate: Fraction, shot_s: tuple[float, float], rng: np.random.Generator
) -> tuple[int, ...]:
    """Hard cuts inside a block, at the pace of its first genre (``Style.cut_pace``).

    A last shot shorter than the pace's minimum shot is merged into the one before it.
    """
    pace = GRAMMAR[block.genres[0]].cut_pace
    shortest = _frames(shot_s[0] * pace, rate)
    cuts = []
    position = block.start + _frames(rng.uniform(*shot_s) * pace, rate)
    while block.stop - position >= shortest:
        cuts.append(position)
        position += _frames(rng.uniform(*shot_s) * pace, rate)
    return tuple(cuts)


def deal_split_genres(
    plans: list[TrailerPlan], settings: SynthConfig, seed: int
) -> dict[tuple[str, int], tuple[str, ...]]:
    """(trailer id, block start) -> genres: each split's blocks dealt from decks of all six."""
    genres: dict[tuple[str, int], tuple[str, ...]] = {}
    for index, split in enumerate(SPLITS):
        blocks = [(p.trailer_id, b.start) for p in plans if p.split == split for b in p.blocks]
        rng = np.random.default_rng([seed, _GENRES, index])
        genres.update(
            zip(blocks, deal_genres(len(blocks), settings.second_genre_prob, rng), strict=True)
        )
    return genres


def deal_trailer_genres(
    plans: list[TrailerPlan], settings: SynthConfig, seed: int
) -> dict[tuple[str, int], tuple[str, ...]]:
    """(trailer id, block start) -> genres: each trailer draws ``genres_per_trailer`` distinct
    genres (at most two per block it has) and deals them to its blocks, each at least once."""
    low, high = settings.genres_per_trailer
    genres: dict[tuple[str, int], tuple[str, ...]] = {}
    for index, plan in enumerate(plans):
        rng = np.random.default_rng([seed, _TRAILER_GENRES, index])
        count = min(int(rng.integers(low, high + 1)), 2 * len(plan.blocks))
        pool = tuple(GENRES[i] for i in sorted(rng.choice(len(GENRES), count, replace=False)))
        dealt = deal_genres(len(plan.blocks), settings.second_genre_prob, rng, pool)
        genres.update(zip([(plan.trailer_id, b.start) for b in plan.blocks], dealt, strict=True))
    return genres


def plan_corpus(settings: SynthConfig, seed: int) -> list[TrailerPlan]:
    """The whole corpus as plans, drawn from ``seed``; nothing is rendered or written."""
    ids = trailer_ids(settings.n_trailers)
    plans = [
        plan_layout(trailer_id, settings, np.random.default_rng([seed, _LAYOUT, index]))
        for index, trailer_id in enumerate(ids)
    ]
    splits = assign_splits(ids, settings.split_fractions, np.random.default_rng([seed, _SPLITS]))
    plans = [replace(plan, split=splits[plan.trailer_id]) for plan in plans]
    genres = (
        deal_split_genres(plans, settings, seed)
        if settings.genres_per_trailer is None
        else deal_trailer_genres(plans, settings, seed)
    )
    planned = []
    for index, plan in enumerate(plans):
        rng = np.random.default_rng([seed, _CUTS, index])
        parts = []
        for part in plan.parts:
            if part.kind == "block":
                part = replace(part, genres=genres[plan.trailer_id, part.start])
                part = replace(part, cuts=cut_shots(part, plan.rate, settings.shot_s, rng))
            parts.append(part)
        planned.append(replace(plan, parts=tuple(parts)))
    return planned


def render(plan: TrailerPlan) -> Iterator[np.ndarray]:
    """The trailer's RGB frames, ``(n, height, width, 3)`` uint8, one shot or gap at a time."""
    height, width = plan.height, plan.width
    for part in plan.parts:
        if part.kind == "black":
            yield black(part.stop - part.start, height, width)
            continue
        if part.kind == "title":
            yield title_card(
                np.random.default_rng(part.seed), part.stop - part.start, height, width
            )
            continue
        widths = [width] if len(part.genres) == 1 else [width // 2, width - width // 2]
        for shot, (start, stop) in enumerate(part.shots()):
            rng = np.random.default_rng([part.seed, shot])
            times = np.arange(stop - start) / float(plan.rate)
            yield np.concatenate(
                [scene(g, rng, times, height, w) for g, w in zip(part.genres, widths, strict=True)],
                axis=2,
            )


def yuv420(picture: np.ndarray) -> np.ndarray:
    """RGB ``(h, w, 3)`` to planar yuv420p ``(h * 3 // 2, w)``: BT.601, limited range.

    Integer maths, so the encoder's input is the same in every process. (Left to swscale, the
    conversion of frames whose rows are not SIMD-aligned changed with where numpy happened to
    allocate them, and so did the bitstream.)
    """
    rgb = picture.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    height, width = r.shape
    pooled = rgb.reshape(height // 2, 2, width // 2, 2, 3).sum(axis=(1, 3))
    r, g, b = pooled[..., 0], pooled[..., 1], pooled[..., 2]  # 4x the 2x2 block's mean
    blue = ((-38 * r - 74 * g + 112 * b + 512) >> 10) + 128
    red = ((112 * r - 94 * g - 18 * b + 512) >> 10) + 128
    planes = [luma.ravel(), blue.ravel(), red.ravel()]
    return np.concatenate(planes).astype(np.uint8).reshape(height * 3 // 2, width)


def yuv420_frame(picture: np.ndarray) -> av.VideoFrame:
    """An encoder frame that owns a copy of ``picture`` in yuv420p.

    ``VideoFrame.from_ndarray`` wraps the array's memory without copying, and x264 keeps frames
    for its lookahead after ``encode`` returns: a temporary array freed meanwhile is read as
    garbage (measured: the bitstream then changed from run to run).
    """
    height, width = picture.shape[:2]
    frame = av.VideoFrame(width, height, "yuv420p")
    planes = np.split(yuv420(picture).ravel(), [height * width, height * width * 5 // 4])
    for plane, data in zip(frame.planes, planes, strict=True):
        padded = np.zeros((plane.height, plane.line_size), np.uint8)
        padded[:, : plane.width] = data.reshape(plane.height, plane.width)
        plane.update(padded)
    return frame


def encode(plan: TrailerPlan, path: Path, crf: int, preset: str) -> None:
    """Write the trailer as H.264 yuv420p in mp4 with PyAV, constant frame rate ``plan.rate``."""
    time_base = 1 / plan.rate
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(
            "libx264",
            rate=plan.rate,
            options={"crf": str(crf), "preset": preset, **ENCODER_OPTIONS},
        )
        stream.width, stream.height, stream.pix_fmt = plan.width, plan.height, "yuv420p"
        stream.codec_context.time_base = time_base
        index = 0
        for chunk in render(plan):
            for picture in chunk:
                frame = yuv420_frame(picture)
                frame.pts, frame.time_base = index, time_base
                container.mux(stream.encode(frame))
                index += 1
        container.mux(stream.encode())


def annotation_rows(plans: list[TrailerPlan]) -> list[tuple[str, str, str, str]]:
    """``annotations.csv`` rows: one per genre per block, times from ``seconds_text``."""
    return [
        (plan.trailer_id, seconds_text(start), seconds_text(end), genre)
        for plan in plans
        for start, end, genre in plan.segments()
    ]


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def missing_genres(plans: list[TrailerPlan]) -> dict[str, list[str]]:
    """Per split, the genres none of its trailers shows (empty lists when all are there)."""
    present = {split: set() for split in SPLITS}
    for plan in plans:
        present[plan.split].update(genre for block in plan.blocks for genre in block.genres)
    return {split: [g for g in GENRES if g not in present[split]] for split in SPLITS}


def run(config: Config) -> None:
    """Plan, draw and encode the corpus, then write its receipt (what decode knows the demo's
    videos by), ``annotations.csv`` and ``splits.csv``.

    Videos are written first and the label files last, each atomically; videos of an earlier,
    larger corpus (``trailer_*.mp4`` not in this plan) and a killed run's temporary files are
    removed.
    """
    settings, paths = config.synth, config.paths
    plans = plan_corpus(settings, config.seed)
    for split, genres in missing_genres(plans).items():
        if genres:
            log.warning(
                "split %s has too few blocks for every genre: no %s", split, ", ".join(genres)
            )
    paths.videos.mkdir(parents=True, exist_ok=True)
    for output in (paths.videos / "trailer_", paths.annotations, paths.splits):
        remove_leftovers(output.parent, output.name)
    for plan in tqdm(plans, desc="synth", unit="trailer", disable=None):
        with atomic_path(paths.video(plan.trailer_id)) as tmp:
            encode(plan, tmp, settings.crf, settings.preset)
    wanted = {paths.video(plan.trailer_id) for plan in plans}
    for stale in sorted(set(paths.videos.glob("trailer_*.mp4")) - wanted):
        log.info("removing %s: not part of this corpus", stale)
        stale.unlink()
    write_synth_receipt(paths.synth_receipt, sorted(wanted))
    _write_csv(paths.annotations, ANNOTATION_COLUMNS, annotation_rows(plans))
    _write_csv(paths.splits, SPLIT_COLUMNS, [(plan.trailer_id, plan.split) for plan in plans])
    seconds = float(sum(plan.duration_s for plan in plans))
    log.info("wrote %d trailers (%.1f s of video) to %s", len(plans), seconds, paths.videos)
