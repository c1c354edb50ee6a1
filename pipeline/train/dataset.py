"""The train stage's input: ``tf.data`` pipelines that stream windows of trailers from the shards.

A trailer is its shards in ``first_frame`` order; a window is ``length`` consecutive frames of a
trailer, so it may cross shard boundaries. Shards are read memory-mapped
(``np.load(mmap_mode="r")``), copying only the window's frames, never a whole shard.

Elements: ``(frames, labels)``, frames uint8 ``(batch, time, channels, height, width)``
(channels_first, scaled inside the model) and labels a dict ``{genre: float32 (batch, time, 1)}``
in :data:`pipeline.GENRES` order, the classifier's output names.

**Design: an index source and a parallel ``map``.** Each epoch a plan of windows (trailer,
start, length, flip) is drawn in NumPy from an epoch key that ``Dataset.random(seed,
rerandomize_each_iteration=True)`` gives: the same seed gives the same sequence of epochs, each
iteration of the dataset a new epoch (so ``fit`` must open it once per epoch:
:func:`pipeline.train.run.fit`). The plan is a full permutation of every window of every
trailer (so there is no shuffle buffer: nothing to buffer but indices). A
``map`` with ``num_parallel_calls=train.parallel_reads`` reads windows through
``tf.numpy_function(..., stateful=False)``; NumPy drops the GIL while it copies the mapped pages,
so several shards are read at once, and ``deterministic=True`` keeps the plan's order. The
other option, ``interleave`` over ``parallel_reads`` ``Dataset.from_generator`` sources reading
the same plan with the same reader, delivered 0.30-0.42x raw memory-mapped reads (median per
round) against 0.68-0.75x for this one (``make bench-input``, 2 shared cores; see
benchmarks/README.md): every generator step holds the GIL, while here whole batches are read per
call. Its iterator cannot be checkpointed either; this one can (no Python state between
elements).

**Training** (:func:`train_dataset`): windows of ``train.window`` frames every ``train.stride``
frames of each trailer, shifted by a random offset in ``[0, stride)`` per trailer and epoch; the
last window is pulled back to end at the trailer's end, so every epoch has the same number of
windows (:func:`window_count`) and the dataset knows its length. Trailers shorter than a window
give none. ``train.augment``: ``temporal_jitter`` moves each start by up to that many frames
(kept inside the trailer), ``horizontal_flip`` reverses the width axis of half the windows,
the whole window alike. Never applied by :func:`eval_dataset`.

**Evaluation** (:func:`eval_dataset`): whole trailers one at a time (``train.eval_window: 0``;
trailers differ in length, so ``train.eval_batch_size`` must then be 1, checked), or windows
of ``eval_window`` frames tiled from each trailer's first frame, a tail shorter than a window
dropped.

**Trailer-level labels** (``label_level: trailer`` rows, ``train.weak_labels``). With
``broadcast`` a weak trailer reads as any other: its genres on every frame. With ``mil`` its
positive frames read as :data:`WEAK` (the genre is somewhere in the trailer, this frame unknown;
the loss pools them, :mod:`pipeline.train.losses`), its negative frames stay exact 0s, and in
training it is one bag: a single window from its first frame each epoch (never flipped in
time, flipped in width like any window), which must hold the whole trailer: a trailer-level
trailer longer than ``train.window`` is an error, a shorter one is padded with frames labelled
:data:`PAD` and weighted 0 (the elements then carry per-frame weights). A genre of the trailer
may be absent from any shorter window, so a window never stands for the bag. A segment-labelled
trailer shorter than the window (bags need a long one) is read the same way, one padded window
with its exact labels, so a catalogue that mixes both levels loses none of its segments.

**Splits.** Every function takes the rows of one split, as the train stage passes them; give
``split=`` to pick one from rows of several. Rows of several splits without ``split=`` are an
error, as are unlabelled rows, a missing shard, or one whose shape disagrees with the manifest
(:class:`pipeline.core.errors.StageError`, naming the file), found before any ``tf`` work starts.

**Several replicas in one process** (``MirroredStrategy``): ``batch_size`` is the global batch,
which ``tf.distribute`` splits between the replicas (auto-sharding by ``DATA``: the source is
no list of files); :func:`split_evenly` pads it so that no replica is left empty.

**Several workers** (``shard=``, :class:`Shard`; ``MultiWorkerMirroredStrategy``, one process
per worker): every worker draws the same epoch plan from the seed and reads only its own rows
of it, ``batch_size`` windows of every global batch of ``batch_size * workers``
(:func:`shard_plan`), so no frame is read twice. The last global batch is padded with
all-zero windows of weight 0, so every worker runs the same number of steps (a worker that ran
out first would leave the others waiting in an all-reduce). Auto-sharding is off.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline import GENRES
from pipeline.core.config import TrainConfig
from pipeline.core.errors import StageError
from pipeline.core.manifest import ShardRow
from pipeline.core.shards import by_trailer, check_contiguous, check_shape, map_npy

OPEN_SHARDS = 64
"""Memory maps kept open per dataset (each holds a file descriptor)."""

PADDING = -1
"""The trailer number of a padding row in a plan: read as all-zero frames and labels, weight 0."""

WEAK = 2.0
"""The label of a frame of a trailer-level-labelled trailer whose trailer has the genre (with
``train.weak_labels: mil``): in the bag, not known to be in this frame."""
PAD = -1.0
"""The label of the padding that fills a short bag to its window: no loss, never pooled."""


@dataclass(frozen=True)
class Shard:
    """Which of ``workers`` input pipelines this is (``tf.distribute.InputContext``'s
    ``input_pipeline_id`` and ``num_input_pipelines``)."""

    index: int
    workers: int


@dataclass(frozen=True)
class Trailer:
    """One trailer's shards (frames and labels files) in order, and their frame counts."""

    trailer_id: str
    shards: tuple[Path, ...]
    labels: tuple[Path, ...]
    shard_frames: tuple[int, ...]
    weak: bool = False
    """Labelled at trailer level and trained as a bag (``train.weak_labels: mil``)."""
    whole: bool = False
    """Read as one padded window from its first frame: a bag, or (``mil``) a segment-labelled
    trailer shorter than ``train.window``."""

    @property
    def frames(self) -> int:
        return sum(self.shard_frames)

    def pieces(self, start: int, length: int) -> list[tuple[int, int, int]]:
        """``(shard, first, stop)`` of each shard's part of frames ``[start, start + length)``."""
        pieces, end, first = [], start + length, 0
        for index, count in enumerate(self.shard_frames):
            low, high = max(start, first), min(end, first + count)
            if low < high:
                pieces.append((index, low - first, high - first))
            first += count
        return pieces


class Corpus:
    """The trailers of one split, checked against the manifest, read window by window."""

    def __init__(
        self,
        rows: Sequence[ShardRow],
        shards_dir: Path,
        split: str | None,
        weak_labels: str = "broadcast",
        window: int | None = None,
    ) -> None:
        rows = _split_rows(rows, split)
        self.frame_shape = _frame_shape(rows)
        self.trailers = tuple(
            _trailer(group, Path(shards_dir), weak_labels == "mil", window)
            for group in by_trailer(rows)
        )
        self._map = functools.lru_cache(maxsize=OPEN_SHARDS)(map_npy)
        for row in rows:
            frames, labels = Path(shards_dir) / row.shard, Path(shards_dir) / row.labels
            check_shape(frames, self._map(frames), (row.frames, *self.frame_shape), "uint8")
            check_shape(labels, self._map(labels), (row.frames, len(GENRES)), "uint8")

    @property
    def lengths(self) -> np.ndarray:
        return np.array([trailer.frames for trailer in self.trailers], dtype=np.int64)

    @property
    def whole(self) -> np.ndarray:
        """Whether each trailer is read as one padded window (bool, :attr:`trailers` order)."""
        return np.array([trailer.whole for trailer in self.trailers], dtype=bool)

    def read(self, plan: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames (uint8), float32 labels and float32 per-frame weights ``(batch, time, 1)``
        of plan rows of one length, stacked; a :data:`PADDING` row is zeros of weight 0, and so
        are the frames of a bag's window past its trailer's end (labels :data:`PAD`)."""
        length = int(plan[0, 2])
        frames = np.empty((len(plan), length, *self.frame_shape), dtype=np.uint8)
        labels = np.empty((len(plan), length, len(GENRES)), dtype=np.float32)
        weights = np.ones((len(plan), length, 1), dtype=np.float32)
        for entry, *window in zip(plan, frames, labels, weights, strict=True):
            if entry[0] == PADDING:
                for part in window:
                    part[:] = 0
            else:
                self._read_into(entry, *window)
        return frames, labels, weights

    def _read_into(
        self, entry: np.ndarray, frames: np.ndarray, labels: np.ndarray, weights: np.ndarray
    ) -> None:
        """Copy one window (width reversed if its flip is set) straight from the mapped pages;
        a bag's positives become :data:`WEAK`, its padding :data:`PAD` of weight 0."""
        trailer, start, length, flip = (int(value) for value in entry)
        source, at = self.trailers[trailer], 0
        for shard, low, high in source.pieces(start, length):
            part = self._map(source.shards[shard])[low:high]
            frames[at : at + high - low] = part[..., ::-1] if flip else part
            labels[at : at + high - low] = self._map(source.labels[shard])[low:high]
            at += high - low
        if source.weak:
            labels[:at] *= WEAK
        frames[at:], labels[at:], weights[at:] = 0, PAD, 0


def _split_rows(rows: Sequence[ShardRow], split: str | None) -> list[ShardRow]:
    if split is not None:
        rows = [row for row in rows if row.split == split]
    splits = sorted({row.split for row in rows})
    if not rows:
        raise StageError(f"no shards of split {split!r} in the manifest")
    if len(splits) > 1:
        raise StageError(f"rows of several splits ({', '.join(splits)}): pass split=")
    unlabelled = [row.shard for row in rows if row.labels is None]
    if unlabelled:
        raise StageError(f"{unlabelled[0]}: no labels; training and evaluation need labels")
    return list(rows)


def _frame_shape(rows: Sequence[ShardRow]) -> tuple[int, int, int]:
    shapes = {(row.channels, row.height, row.width): row.shard for row in rows}
    if len(shapes) > 1:
        found = "; ".join(f"{shard}: {shape}" for shape, shard in shapes.items())
        raise StageError(f"shards of different frame shapes cannot be batched together ({found})")
    return next(iter(shapes))


def _read_whole(length: int, weak: bool, mil: bool, window: int | None) -> bool:
    """One padded window from the first frame: a bag, or with ``mil`` a trailer shorter than
    ``window`` (the long window bags need would otherwise drop its segment labels)."""
    return weak or (mil and window is not None and length < window)


def _trailer(rows: list[ShardRow], shards_dir: Path, mil: bool, window: int | None) -> Trailer:
    check_contiguous(rows)
    weak = mil and rows[0].label_level == "trailer"
    frames = sum(row.frames for row in rows)
    return Trailer(
        trailer_id=rows[0].trailer_id,
        shards=tuple(shards_dir / row.shard for row in rows),
        labels=tuple(shards_dir / row.labels for row in rows),
        shard_frames=tuple(row.frames for row in rows),
        weak=weak,
        whole=_read_whole(frames, weak, mil, window),
    )


def windows_per_trailer(length: int, window: int, stride: int) -> int:
    """Training windows of one trailer in every epoch (0 when it is shorter than a window)."""
    return 0 if length < window else (length - window) // stride + 1


def window_count(rows: Sequence[ShardRow], train: TrainConfig, split: str | None = None) -> int:
    """Training windows per epoch (the same every epoch); batches: ceil(this / batch_size)."""
    mil = train.weak_labels == "mil"
    trailers = [
        _trailer(group, Path(), mil, train.window) for group in by_trailer(_split_rows(rows, split))
    ]
    lengths = np.array([trailer.frames for trailer in trailers])
    return _count(lengths, np.array([trailer.whole for trailer in trailers]), train)


def _count(lengths: np.ndarray, whole: np.ndarray, train: TrainConfig) -> int:
    return sum(
        1 if one else windows_per_trailer(int(n), train.window, train.stride)
        for n, one in zip(lengths, whole, strict=True)
    )


def check_bags(corpus: Corpus, window: int) -> None:
    """StageError naming the first bag longer than ``window``: a bag must see its whole trailer."""
    for trailer in corpus.trailers:
        if trailer.weak and trailer.frames > window:
            raise StageError(
                f"trailer {trailer.trailer_id}: {trailer.frames} frames, more than train.window "
                f"{window}; with train.weak_labels: mil a trailer labelled at trailer level is "
                "one bag that must fit one window (a shorter window may miss its genres): raise "
                "train.window to its length"
            )


def epoch_plan(
    lengths: np.ndarray, train: TrainConfig, key: int, whole: np.ndarray | None = None
) -> np.ndarray:
    """One epoch's windows as int64 rows ``(trailer, start, length, flip)``, in random order.

    Starts are ``offset + k * stride`` with a random ``offset < stride`` per trailer, the last
    one pulled back inside the trailer, then jittered by up to ``augment.temporal_jitter``.
    A trailer marked in ``whole`` gives one window from its first frame (read padded).
    """
    rng = np.random.default_rng(key)
    window, stride, jitter = train.window, train.stride, train.augment.temporal_jitter
    plans = []
    for trailer, length in enumerate(lengths):
        if whole is not None and whole[trailer]:
            plans.append(np.array([[trailer, 0]]))
            continue
        count = windows_per_trailer(int(length), window, stride)
        if count == 0:
            continue
        last = length - window
        starts = np.minimum(rng.integers(stride) + stride * np.arange(count), last)
        starts = np.clip(starts + rng.integers(-jitter, jitter + 1, count), 0, last)
        plans.append(np.stack([np.full(count, trailer), starts], axis=1))
    plan = np.concatenate(plans)
    flips = rng.random(len(plan)) < 0.5 if train.augment.horizontal_flip else np.zeros(len(plan))
    plan = np.column_stack([plan, np.full(len(plan), window), flips]).astype(np.int64)
    return plan[rng.permutation(len(plan))]


def _read_batches(
    plan: tf.data.Dataset,
    corpus: Corpus,
    batch_size: int,
    window: int | None,
    parallel: int,
    weighted: bool = False,
) -> tf.data.Dataset:
    """Batches of plan rows read into ``(frames, labels)`` by parallel calls, in plan order
    (``weighted``: ``(frames, labels, weights)``, 0 on padding rows).

    One ``numpy_function`` call reads a whole batch into its final arrays: a call per window
    then ``Dataset.batch`` measured 0.60x raw reads (median per round), a call per batch
    0.68-0.75x (``make bench-input``, 2 shared cores).
    """

    def read(entries: tf.Tensor) -> tuple:
        frames, labels, weights = tf.numpy_function(
            corpus.read, [entries], (tf.uint8, tf.float32, tf.float32), stateful=False
        )
        frames = tf.ensure_shape(frames, (None, window, *corpus.frame_shape))
        heads = genre_heads(frames, tf.ensure_shape(labels, (None, window, len(GENRES))))
        return (*heads, tf.ensure_shape(weights, (None, window, 1))) if weighted else heads

    return plan.batch(batch_size).map(read, num_parallel_calls=parallel, deterministic=True)


def genre_heads(frames: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Split ``(batch, time, 6)`` labels into the classifier's per-genre ``(batch, time, 1)``."""
    return frames, {genre: labels[..., i : i + 1] for i, genre in enumerate(GENRES)}


def _pad_rows(tensor: tf.Tensor, missing: tf.Tensor) -> tf.Tensor:
    paddings = tf.concat([[[0, missing]], tf.zeros((tensor.shape.rank - 1, 2), tf.int32)], 0)
    return tf.ensure_shape(tf.pad(tensor, paddings), (None, *tensor.shape[1:]))


def split_evenly(replicas: int):
    """A map that pads each batch with all-zero windows to a multiple of ``replicas`` and adds
    per-frame sample weights ``(batch, time, 1)``: 1 on real frames, 0 on the padding.

    ``tf.distribute`` splits a global batch between replicas; a batch smaller than that (the
    last one, or one whole trailer) would leave a replica empty and the all-reduce fails.
    Weighted to zero, the padding changes neither the loss nor the weighted metrics.
    """

    def pad(frames: tf.Tensor, labels: dict[str, tf.Tensor], weights: tf.Tensor | None = None):
        missing = tf.math.floormod(-tf.shape(frames)[0], replicas)
        given = tf.ones_like(labels[GENRES[0]]) if weights is None else weights
        weights = _pad_rows(given, missing)
        padded = {genre: _pad_rows(heads, missing) for genre, heads in labels.items()}
        return _pad_rows(frames, missing), padded, weights

    return pad


def _finish(
    batches: tf.data.Dataset, batch_size: int, count: int, replicas: int, shard: Shard | None
) -> tf.data.Dataset:
    """Known length, even split between replicas, and the auto-sharding policy."""
    workers = shard.workers if shard else 1
    steps = math.ceil(count / (batch_size * workers))
    batches = batches.apply(tf.data.experimental.assert_cardinality(steps))
    if replicas > 1 and shard is None:
        batches = batches.map(split_evenly(replicas))
    policy = tf.data.experimental.AutoShardPolicy
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.OFF if shard else policy.DATA
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE)


def shard_plan(plan: np.ndarray, batch_size: int, shard: Shard) -> np.ndarray:
    """This worker's rows of ``plan``: rows ``[index * batch_size, (index + 1) * batch_size)``
    of every global batch of ``batch_size * workers`` rows, the plan first padded with
    :data:`PADDING` rows (of the last row's length) to a whole number of global batches."""
    global_batch = batch_size * shard.workers
    missing = -len(plan) % global_batch
    padding = np.tile(np.array([PADDING, 0, plan[-1, 2], 0], dtype=plan.dtype), (missing, 1))
    whole = np.concatenate([plan, padding]).reshape(-1, shard.workers, batch_size, plan.shape[1])
    return whole[:, shard.index].reshape(-1, plan.shape[1])


def train_dataset(
    rows: Sequence[ShardRow],
    shards_dir: Path,
    train: TrainConfig,
    seed: int,
    split: str | None = None,
    replicas: int = 1,
    shard: Shard | None = None,
    first_epoch: int = 0,
) -> tf.data.Dataset:
    """Shuffled, augmented training batches; each iteration is a new epoch, fixed by ``seed``;
    the first iteration is epoch ``first_epoch`` (a resumed run's: its epochs are the
    uninterrupted run's).

    With ``replicas`` > 1 every batch splits evenly between them (:func:`split_evenly`). With
    ``shard``, this worker's ``batch_size`` windows of each global batch, weighted
    (:func:`shard_plan`).
    """
    corpus = Corpus(rows, shards_dir, split, train.weak_labels, train.window)
    check_bags(corpus, train.window)
    lengths, whole = corpus.lengths, corpus.whole
    count = _count(lengths, whole, train)
    if count == 0:
        raise StageError(f"no trailer has {train.window} frames (train.window); lower it")

    def worker_plan(key: int) -> np.ndarray:
        plan = epoch_plan(lengths, train, int(key) % 2**63, whole if whole.any() else None)
        return shard_plan(plan, train.batch_size, shard) if shard else plan

    def plan_epoch(key: tf.Tensor) -> tf.Tensor:
        plan = tf.numpy_function(worker_plan, [key], tf.int64, stateful=False)
        return tf.ensure_shape(plan, (None, 4))

    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    for _ in range(first_epoch):  # each iteration advances the seed the pipeline below shares
        next(iter(keys))
    plan = keys.map(plan_epoch).unbatch()
    weighted = bool(shard) or bool(whole.any())
    batches = _read_batches(
        plan, corpus, train.batch_size, train.window, train.parallel_reads, weighted
    )
    return _finish(batches, train.batch_size, count, replicas, shard)


def eval_plan(lengths: np.ndarray, eval_window: int) -> np.ndarray:
    """Whole trailers (``eval_window`` 0) or tiled windows: rows ``(trailer, start, length, 0)``."""
    if eval_window == 0:
        return np.array([[t, 0, n, 0] for t, n in enumerate(lengths)], dtype=np.int64)
    return np.array(
        [
            [t, start, eval_window, 0]
            for t, n in enumerate(lengths)
            for start in range(0, n - eval_window + 1, eval_window)
        ],
        dtype=np.int64,
    ).reshape(-1, 4)


def eval_dataset(
    rows: Sequence[ShardRow],
    shards_dir: Path,
    train: TrainConfig,
    split: str | None = None,
    replicas: int = 1,
    shard: Shard | None = None,
) -> tf.data.Dataset:
    """Evaluation batches in manifest order: whole trailers or ``train.eval_window`` windows
    (split evenly between ``replicas``, or this worker's ``shard``, as in
    :func:`train_dataset`)."""
    if train.eval_window == 0 and train.eval_batch_size != 1:
        raise ValueError(
            "train.eval_batch_size: whole trailers (train.eval_window 0) differ in length and "
            f"are scored one at a time, so it must be 1, got {train.eval_batch_size}"
        )
    corpus = Corpus(rows, shards_dir, split, train.weak_labels)
    plan = eval_plan(corpus.lengths, train.eval_window)
    if len(plan) == 0:
        raise StageError(f"no trailer has {train.eval_window} frames (train.eval_window)")
    window = train.eval_window or None
    batch_size = train.eval_batch_size
    rows = shard_plan(plan, batch_size, shard) if shard else plan
    plan_rows = tf.data.Dataset.from_tensor_slices(rows)
    batches = _read_batches(
        plan_rows, corpus, batch_size, window, train.parallel_reads, bool(shard)
    )
    return _finish(batches, batch_size, len(plan), replicas, shard)


def positive_frequencies(
    rows: Sequence[ShardRow], shards_dir: Path, split: str | None = None
) -> np.ndarray:
    """Each genre's share of positive frames, float64 ``(len(GENRES),)``, from the label files."""
    rows = _split_rows(rows, split)
    positives, frames = np.zeros(len(GENRES)), 0
    for row in rows:
        path = Path(shards_dir) / row.labels
        labels = map_npy(path)
        check_shape(path, labels, (row.frames, len(GENRES)), "uint8")
        positives += labels.sum(axis=0, dtype=np.int64)
        frames += row.frames
    return positives / frames
