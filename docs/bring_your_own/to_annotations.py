"""Turn a trailer-level label file into the pipeline's ``annotations.csv`` and ``splits.csv``.

The input is one row per trailer, as Trailers12k and LMTD-9 give them: an id, the video's path
relative to the videos folder, genres joined by ``|`` and a split (see trailers12k_labels.csv).
Their genres are mapped onto ours by a two-column file (genre_map.csv); a genre it does not
list becomes ``other``. Every genre is written as a trailer-level row (empty start_s and end_s):
every frame of the trailer carries it, and the manifest marks the trailer ``label_level:
trailer`` (weak frame labels).

    python docs/bring_your_own/to_annotations.py LABELS.csv GENRE_MAP.csv OUTPUT_FOLDER
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

FALLBACK_GENRE = "other"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *rows])


def convert(labels: Path, genre_map: Path, output: Path) -> None:
    mapping = {row["their_genre"].lower(): row["our_genre"] for row in read_csv(genre_map)}
    annotations, splits = [], []
    for row in read_csv(labels):
        theirs = [genre.strip().lower() for genre in row["genres"].split("|") if genre.strip()]
        ours = sorted({mapping.get(genre, FALLBACK_GENRE) for genre in theirs})
        annotations += [(row["imdb_id"], "", "", genre, row["file"]) for genre in ours]
        splits.append((row["imdb_id"], row["split"]))
    output.mkdir(parents=True, exist_ok=True)
    write_csv(
        output / "annotations.csv",
        ("trailer_id", "start_s", "end_s", "genre", "video"),
        annotations,
    )
    write_csv(output / "splits.csv", ("trailer_id", "split"), splits)


if __name__ == "__main__":
    convert(*map(Path, sys.argv[1:4]))
