"""Label files as people have them: ids from names, spreadsheet CSVs, trailer-level rows."""

from __future__ import annotations

import math

import pytest

from pipeline.core.annotations import (
    Segment,
    check_trailer_id,
    labelled_trailers,
    read_annotations,
    trailer_id_for,
)
from pipeline.core.errors import StageError


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Movie Title (2019) - Official Trailer #2.mp4", "movie-title-2019-official-trailer-2-"),
        ("Amélie.v2.mkv", "amelie-v2-"),
        ("trailer_007.mp4", "007-"),
        ("sub/予告編.mp4", ""),
    ],
)
def test_ids_from_names_are_a_readable_slug_and_a_hash(name, slug):
    trailer_id = trailer_id_for(name)
    assert check_trailer_id(trailer_id) is None
    assert trailer_id.startswith(slug) and len(trailer_id) == len(slug) + 8
    assert trailer_id_for(name) == trailer_id  # stable


def test_names_that_slug_alike_get_distinct_ids():
    names = ["A b.mp4", "a-b.mp4", "A (b).mp4", "x/a b.mp4", "a b.mkv"]
    ids = [trailer_id_for(name) for name in names]
    assert len(set(ids)) == len(names) and {i[:4] for i in ids} == {"a-b-"}


def write(path, lines, *, bom=False, newline="\n"):
    text = "".join(line + newline for line in lines)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def test_spreadsheet_csv_reads_with_a_bom_crlf_and_padded_cells(tmp_path):
    annotations = write(
        tmp_path / "a.csv",
        ["trailer_id,start_s,end_s,genre,video", "t1, 0 ,1,comedy , My Film (1).mp4", "", ""],
        bom=True,
        newline="\r\n",
    )
    segments, videos, problems = read_annotations(annotations)
    assert problems == []
    assert segments == {"t1": [Segment(0.0, 1.0, "comedy")]}
    assert videos == {"t1": "My Film (1).mp4"}


def test_empty_start_and_end_label_the_whole_trailer(tmp_path):
    annotations = write(tmp_path / "a.csv", ["trailer_id,start_s,end_s,genre", "t1,,,horror"])
    splits = write(tmp_path / "s.csv", ["trailer_id,split", "t1,train"])
    trailers, problems = labelled_trailers(annotations, splits)
    assert problems == []
    (segment,) = trailers["t1"].segments
    assert segment.whole_trailer and segment.start_s == 0 and segment.end_s == math.inf


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("t1,0,1,", "empty genre"),
        ("t1,0,1", "no genre cell (the row is short)"),
        ("t1,0,,comedy", "only one of start_s/end_s is given"),
        ("t1,,,comedy,../outside.mp4", "must be a path inside the videos folder"),
        ("t1,,,comedy,/abs/film.mp4", "must be a path inside the videos folder"),
        ("../t1,,,comedy,film.mp4", "unsafe trailer id '../t1'"),
    ],
)
def test_a_bad_row_names_its_line_and_column(tmp_path, row, reason):
    annotations = write(tmp_path / "a.csv", ["trailer_id,start_s,end_s,genre,video", row])
    _, _, problems = read_annotations(annotations)
    (problem,) = problems
    assert problem.reason.startswith(f"{annotations} line 2: ") and reason in problem.reason


def test_a_video_named_twice_differently_is_refused(tmp_path):
    annotations = write(
        tmp_path / "a.csv",
        ["trailer_id,start_s,end_s,genre,video", "t1,,,comedy,a.mp4", "t1,,,horror,b.mp4"],
    )
    _, _, problems = read_annotations(annotations)
    assert [p.reason for p in problems] == [
        f"{annotations} line 3: video 'b.mp4' differs from 'a.mp4'"
    ]


def test_another_encoding_or_an_unknown_column_stops_with_one_line(tmp_path):
    legacy = tmp_path / "legacy.csv"
    legacy.write_bytes("trailer_id,split\r\nt1,train\r\nété,val\r\n".encode("cp1252"))
    with pytest.raises(StageError) as error:
        labelled_trailers(legacy, legacy)
    assert str(error.value) == (
        f"{legacy} line 3: not UTF-8 (byte 0xe9); save it as UTF-8 (in Excel: 'CSV UTF-8')"
    )
    extra = write(tmp_path / "x.csv", ["trailer_id,start_s,end_s,genre,notes"])
    with pytest.raises(StageError, match="header is 'trailer_id,start_s,end_s,genre,notes'"):
        read_annotations(extra)
