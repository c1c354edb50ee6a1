"""Relabel one split of a segment-labelled corpus at trailer level, the way a user's catalogue
comes: each trailer's genres become one row in a Trailers12k-style label file, which
``to_annotations.py`` turns into trailer-level annotations (``label_level: trailer``).

``configs/weak.yaml``'s demo (``make run-weak``) does this to its train split, so that the model
learns from trailer-level labels while val and test keep their segments (the timeline can be
scored). The corpus's ``annotations.csv`` is rewritten in place, atomically; running it again
changes nothing.

    python docs/bring_your_own/weaken.py DATA_DIR [SPLIT]
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

from to_annotations import convert, read_csv, write_csv

GENRES = ("comedy", "action", "horror", "suspense", "musical", "other")
ANNOTATION_HEADER = ("trailer_id", "start_s", "end_s", "genre", "video")


def weaken(data_dir: Path, split: str = "train") -> int:
    """Rewrite ``data_dir/annotations.csv`` with ``split``'s trailers labelled at trailer
    level; returns how many trailers that is."""
    annotations = read_csv(data_dir / "annotations.csv")
    splits = read_csv(data_dir / "splits.csv")
    chosen = {row["trailer_id"] for row in splits if row["split"] == split}
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


if __name__ == "__main__":
    count = weaken(Path(sys.argv[1]), *sys.argv[2:3])
    print(f"{sys.argv[1]}/annotations.csv: {count} trailers labelled at trailer level")
