"""Relabel one split of a segment-labelled corpus at trailer level, the way a user's catalogue
comes: each trailer's genres become one row in a Trailers12k-style label file, which
``to_annotations.py`` turns into trailer-level annotations (``label_level: trailer``).

``configs/weak.yaml``'s demo (``make run-weak``) does this to its train split, so that the model
learns from trailer-level labels while val and test keep their segments (the timeline can be
scored). ``--segment-fraction F`` keeps the segments of ``round(F * n)`` of the split's ``n``
trailers, the first of one permutation of them drawn from ``--seed``, so a larger fraction keeps
a superset (``make label-fraction`` sweeps it). ``--config`` takes the data folder, seed and
the ``weaken:`` section from a pipeline config instead. The corpus's ``annotations.csv`` is
rewritten in place, atomically; running it again changes nothing. A trailer that should keep
its segments but has none left (the file was weakened before) is an error: weaken a fresh copy.

    python docs/bring_your_own/weaken.py DATA_DIR [SPLIT] [--segment-fraction F] [--seed N]
    python docs/bring_your_own/weaken.py --config configs/weak.yaml [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import sys
import tempfile
from pathlib import Path

from to_annotations import convert, read_csv, write_csv

GENRES = ("comedy", "action", "horror", "suspense", "musical", "other")
ANNOTATION_HEADER = ("trailer_id", "start_s", "end_s", "genre", "video")


class WeakenError(ValueError):
    """A corpus this cannot weaken as asked; the message is one line."""


def keep_segments(trailer_ids: list[str], fraction: float, seed: int) -> set[str]:
    """The ``round(fraction * n)`` trailers (half up) that keep their segments: the first of a
    permutation of the sorted ids drawn from ``seed``, so the choices of larger fractions
    contain those of smaller ones."""
    if not 0 <= fraction <= 1:
        raise WeakenError(f"segment fraction: expected 0 to 1, got {fraction}")
    order = sorted(trailer_ids)
    random.Random(seed).shuffle(order)
    return set(order[: math.floor(fraction * len(order) + 0.5)])


def weaken(data_dir: Path, split: str = "train", fraction: float = 0.0, seed: int = 0) -> int:
    """Rewrite ``data_dir/annotations.csv`` with ``split``'s trailers labelled at trailer
    level but the ``fraction`` that keep their segments (:func:`keep_segments`); returns how
    many trailers were labelled at trailer level."""
    annotations = read_csv(data_dir / "annotations.csv")
    splits = read_csv(data_dir / "splits.csv")
    in_split = sorted({row["trailer_id"] for row in splits if row["split"] == split})
    kept_ids = keep_segments(in_split, fraction, seed)
    timed = {row["trailer_id"] for row in annotations if row.get("start_s") or row.get("end_s")}
    lost = sorted(kept_ids - timed)
    if lost:
        raise WeakenError(
            f"{data_dir / 'annotations.csv'}: trailer {lost[0]} should keep its segments "
            f"(segment fraction {fraction}) but has only trailer-level labels "
            f"({len(lost)} such): weaken a fresh copy of the corpus's annotations"
        )
    chosen = set(in_split) - kept_ids
    genres: dict[str, set[str]] = {}
    for row in annotations:
        if row["trailer_id"] in chosen:
            genres.setdefault(row["trailer_id"], set()).add(row["genre"])
    kept = [
        tuple(row.get(column) or "" for column in ANNOTATION_HEADER)
        for row in annotations
        if row["trailer_id"] not in chosen
    ]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        labels = [
            (trailer_id, f"trailer_{trailer_id}.mp4", "|".join(sorted(found)), split)
            for trailer_id, found in sorted(genres.items())
        ]
        write_csv(folder / "labels.csv", ("imdb_id", "file", "genres", "split"), labels)
        write_csv(folder / "genre_map.csv", ("their_genre", "our_genre"), [(g, g) for g in GENRES])
        convert(folder / "labels.csv", folder / "genre_map.csv", folder / "out")
        weak = [tuple(row.values()) for row in read_csv(folder / "out" / "annotations.csv")]
    target = data_dir / "annotations.csv"
    handle, tmp = tempfile.mkstemp(dir=data_dir, prefix=".annotations-", suffix=".csv")
    with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
        csv.writer(out, lineterminator="\n").writerows([ANNOTATION_HEADER, *kept, *weak])
    os.replace(tmp, target)
    return len(genres)


def arguments(argv: list[str]) -> tuple[Path, str, float, int]:
    """``(data_dir, split, fraction, seed)`` from the command line or its ``--config``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path)
    parser.add_argument("split", nargs="?", default="train")
    parser.add_argument("--segment-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, help="take all four from a pipeline config")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    args = parser.parse_args(argv)
    if args.config is None:
        if args.data_dir is None:
            parser.error("give DATA_DIR or --config")
        return args.data_dir, args.split, args.segment_fraction, args.seed
    from pipeline.core.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.set)
    except ConfigError as exc:
        raise WeakenError(str(exc)) from None
    weaken_section = config.weaken
    return (
        Path(config.paths.data_dir),
        weaken_section.split,
        weaken_section.segment_fraction,
        config.seed,
    )


def main(argv: list[str]) -> int:
    try:
        data_dir, split, fraction, seed = arguments(argv)
        count = weaken(data_dir, split, fraction, seed)
    except (WeakenError, OSError) as exc:
        print(f"weaken: {exc}", file=sys.stderr)
        return 2
    print(
        f"{data_dir}/annotations.csv: {count} {split} trailers labelled at trailer level "
        f"(segment fraction {fraction}, seed {seed})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
