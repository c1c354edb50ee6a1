"""A user's own catalogue through the real CLI: files named as people name them, labels as
spreadsheets save them, trailer-level genres from a public dataset, a mix of containers, and a
rerun that repairs damaged shards."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import ROOT, SMOKE_CONFIG, copy_corpus, path_overrides, trailers
from media import FFMPEG_LINE, frame_codes, write_video

from pipeline import GENRES
from pipeline.core.annotations import check_trailer_id, labelled_trailers
from pipeline.core.config import Config, ConfigError, load_config
from pipeline.core.manifest import ShardRow, read_manifest
from pipeline.core.video import sample_times, sample_video

NAMES = (  # spaces, an accent, dots, parentheses, '#', a sub-folder; the first two slug alike
    "Movie Title (2019) - Official Trailer #2.mp4",
    "movie title 2019 official trailer 2.mp4",
    "Amélie.v2 (2001).mp4",
    "extras/Behind the scenes.mov",
)


CODED_FRAMES, CODED_RATE = 50, 25
"""The frame-numbered videos of the catalogue: 2 s at 25 fps."""
CODED_VIDEOS = {
    "news clip.ts": "libx264",  # containers decord misplaces frames in (remuxed first)
    "old tape.mpg": "mpeg2video",
    "web stream.mkv": "libsvtav1",  # AV1: decord's FFmpeg has no decoder, PyAV reads it
    "web stream av1.mp4": "libsvtav1",
    "web stream.webm": "libvpx-vp9",
    "phone clip hevc.mp4": "libx265",
    "webcam.avi": "mjpeg",
    "camcorder.avi": "mpeg4",  # MPEG-4 Part 2, as XviD and DivX wrote AVIs
}
PYAV_READ = {"web stream.mkv", "web stream av1.mp4"}


def smoke_videos(corpus: Config) -> list[Path]:
    return sorted(corpus.paths.videos.glob("*.mp4"))


def reencode(source: Path, target: Path, container: str, codec: str) -> Path:
    """``source``'s frames in another container and codec, as a user's catalogue holds them."""
    with av.open(str(source)) as reader, av.open(str(target), "w", format=container) as writer:
        stream = reader.streams.video[0]
        out = writer.add_stream(codec, rate=stream.average_rate)
        out.width, out.height, out.pix_fmt = stream.width, stream.height, "yuv420p"
        out.options = {"crf": "0"} if codec == "libx264" else {"qscale": "1"}
        for frame in reader.decode(stream):
            writer.mux(out.encode(frame.reformat(format="yuv420p")))
        writer.mux(out.encode())
    return target


def catalogue(folder: Path, corpus: Config) -> Path:
    """A folder of the smoke videos under awkward names, frame-numbered videos in other codecs
    and containers (:data:`CODED_VIDEOS`), and two non-videos."""
    videos = smoke_videos(corpus)
    for name, source in zip(NAMES, videos, strict=False):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / name)
    for name, codec in CODED_VIDEOS.items():
        write_video(folder / name, CODED_FRAMES, CODED_RATE, codec=codec)
    (folder / "notes.txt").write_text("not a video\n")
    (folder / ".thumbnail.mp4").write_bytes(b"")
    return folder


def rows_by_video(root: Path) -> dict[str, list[ShardRow]]:
    rows: dict[str, list[ShardRow]] = {}
    for row in read_manifest(root / "data" / "shards" / "manifest.jsonl"):
        rows.setdefault(row.video, []).append(row)
    return rows


def frames(root: Path, rows: list[ShardRow], key: str = "shard") -> np.ndarray:
    shards = root / "data" / "shards"
    return np.concatenate([np.load(shards / getattr(row, key)) for row in rows])


def report(root: Path) -> dict:
    return json.loads((root / "data" / "decode_report.json").read_text())


def test_a_folder_of_named_files_decodes_every_one(smoke_corpus, tmp_path):
    folder = catalogue(tmp_path / "catalogue", smoke_corpus)
    result = trailers(
        "decode",
        *path_overrides(tmp_path),
        "decode.source=folder",
        f"decode.input_dir={folder}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    decoded = report(tmp_path)
    names = {*NAMES, *CODED_VIDEOS}
    assert decoded["failed"] == [] and decoded["videos"] == len(names)
    assert set(decoded["trailers"].values()) == names
    ids = list(decoded["trailers"])
    assert len(set(ids)) == len(names) and all(check_trailer_id(i) is None for i in ids)
    assert decoded["skipped"] == [
        {"video": ".thumbnail.mp4", "reason": "hidden file"},
        {
            "video": "notes.txt",
            "reason": "not a video extension (.txt; see decode.video_extensions)",
        },
    ]
    rows = rows_by_video(tmp_path)
    assert set(rows) == names
    for video, video_rows in rows.items():
        assert {row.trailer_id for row in video_rows} == {
            i for i, name in decoded["trailers"].items() if name == video
        }
        assert all(row.label_level is None and row.split == "unlabelled" for row in video_rows)
    assert not FFMPEG_LINE.search(result.stderr), result.stderr
    # Every codec and container: each sampled frame is the one on screen at its time, by the
    # number it shows; decord reads all but AV1, PyAV that.
    fps = smoke_corpus.decode.fps
    on_screen = np.floor(sample_times(CODED_FRAMES / CODED_RATE, fps) * CODED_RATE + 1e-9)
    for video in CODED_VIDEOS:
        assert frame_codes(frames(tmp_path, rows[video])).tolist() == on_screen.tolist(), video
    for video, video_rows in rows.items():
        expected = "pyav" if video in PYAV_READ else "decord"
        assert {row.decoder for row in video_rows} == {expected}, video
    # The reader at predict's settings gives decode's frames, byte for byte.
    for video in [*CODED_VIDEOS, NAMES[0]]:
        source = folder / video
        decode = smoke_corpus.decode
        sampling, chunks = sample_video(  # as predict_video calls it
            source,
            fps,
            decode.height,
            decode.width,
            decode.aspect,
            smoke_corpus.predict.chunk_frames,
            threads=smoke_corpus.predict.decoder_threads,
            fault_tolerance=decode.fault_tolerance,
            remux_formats=decode.remux_formats,
            allow_truncated=decode.allow_truncated,
        )
        predicted = np.concatenate(list(chunks))
        assert np.array_equal(predicted, frames(tmp_path, rows[video])), video


def spreadsheet_csv(path: Path, lines: list[str]) -> None:
    """Saved as Excel's "CSV UTF-8": a byte order mark and CRLF line endings."""
    path.write_bytes("\ufeff".encode() + "".join(f"{line}\r\n" for line in lines).encode())


def test_spreadsheet_labels_with_a_video_column_decode(smoke_corpus, tmp_path):
    folder = catalogue(tmp_path / "catalogue", smoke_corpus)
    data = tmp_path / "data"
    data.mkdir()
    spreadsheet_csv(
        data / "annotations.csv",
        [
            "trailer_id,start_s,end_s,genre,video",
            f"tt01,,,suspense,{NAMES[0]}",
            f"tt01,,,horror,{NAMES[0]}",
            f"tt02,0,1,comedy,{NAMES[2]}",
            f'tt02,0.5,2,musical,"{NAMES[2]}"',
            "tt03,,,action,old tape.mpg",
        ],
    )
    spreadsheet_csv(
        data / "splits.csv", ["trailer_id,split", "tt01,train", "tt02,val", "tt03,test"]
    )
    overrides = (*path_overrides(tmp_path), f"decode.input_dir={folder}")
    result = trailers("decode", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_by_video(tmp_path)
    assert set(rows) == {NAMES[0], NAMES[2], "old tape.mpg"}
    whole = frames(tmp_path, rows[NAMES[0]], "labels")
    expected = [int(genre in ("suspense", "horror")) for genre in GENRES]
    assert (whole == expected).all()  # every frame carries the trailer's genres
    assert {row.label_level for row in rows[NAMES[0]] + rows["old tape.mpg"]} == {"trailer"}
    timed = frames(tmp_path, rows[NAMES[2]], "labels")
    times = np.arange(len(timed)) / 8.0
    assert timed[:, GENRES.index("comedy")].tolist() == (times < 1).astype(int).tolist()
    assert {row.label_level for row in rows[NAMES[2]]} == {"segment"}
    skipped = {entry["video"] for entry in report(tmp_path)["skipped"]}
    assert {NAMES[1], NAMES[3], "news clip.ts", "notes.txt"} <= skipped


def test_a_label_file_in_another_encoding_is_one_line_and_exit_1(tmp_path):
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    annotations = data / "annotations.csv"
    annotations.write_bytes(
        "trailer_id,start_s,end_s,genre,video\n001,0,1,comedy,a.mp4\n002,,,comedy,Amélie.mp4\n".encode(
            "cp1252"
        )
    )
    result = trailers("decode", *path_overrides(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"trailers decode: {annotations} line 3: not UTF-8 (byte 0xe9); save it as UTF-8 "
        "(in Excel: 'CSV UTF-8')"
    ]


@pytest.mark.slow
def test_a_shard_overwritten_in_place_is_redone_and_validate_then_passes(
    validated_corpus, tmp_path
):
    root = copy_corpus(validated_corpus, tmp_path)
    # Decoded as the corpus's project was, its paths relative to the folder (the receipts name
    # the sources by them), so nothing but the shards changed below.
    decode = ("decode",)
    rows = read_manifest(root / "data" / "shards" / "manifest.jsonl")
    shards = root / "data" / "shards"
    overwritten, hidden = shards / rows[0].shard, shards / rows[-1].shard
    assert rows[0].trailer_id != rows[-1].trailer_id
    stamp = hidden.stat().st_mtime_ns
    for shard in (overwritten, hidden):
        with open(shard, "r+b") as handle:  # same size, new bytes
            handle.seek(-64, os.SEEK_END)
            handle.write(b"\xff" * 64)
    os.utime(hidden, ns=(stamp, stamp))  # its modification time put back too
    assert trailers(*decode, cwd=root).returncode == 0
    assert report(root)["decoded"] == 1  # size and time: the cheap check misses the hidden one
    assert trailers(*decode, "decode.verify=sha256", cwd=root).returncode == 0
    assert report(root)["decoded"] == 1
    assert read_manifest(root / "data" / "shards" / "manifest.jsonl") == rows
    result = trailers("validate", *path_overrides(root), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_the_documented_trailer_level_example(smoke_corpus, tmp_path):
    """docs/bring_your_own: a Trailers12k-style label file, mapped onto our genres."""
    example = ROOT / "docs" / "bring_your_own"
    labels = {row["file"]: row for row in csv_rows(example / "trailers12k_labels.csv")}
    folder = tmp_path / "my trailers"
    for name, source in zip(labels, smoke_videos(smoke_corpus), strict=False):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        reencode(source, folder / name, *CONTAINERS.get(Path(name).suffix, ("mp4", "libx264")))
    script = example / "to_annotations.py"
    data = tmp_path / "data"
    converted = subprocess.run(
        [
            sys.executable,
            str(script),
            str(example / "trailers12k_labels.csv"),
            str(example / "genre_map.csv"),
            str(data),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert converted.returncode == 0, converted.stderr
    result = trailers(
        "decode", *path_overrides(tmp_path), f"decode.input_dir={folder}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_by_video(tmp_path)
    assert set(rows) == set(labels)
    expected = {  # thriller -> suspense; romance, sci-fi, adventure, drama -> other
        "Movie Title (2019) - Official Trailer #2.mp4": {"suspense", "horror"},
        "Amélie (2001).mp4": {"comedy", "other"},
        "Space Opera [4K].mkv": {"action", "other"},
        "old/A Musical Night.mpg": {"musical", "other"},
    }
    for video, genres in expected.items():
        assert (frames(tmp_path, rows[video], "labels") == [g in genres for g in GENRES]).all()
        assert {row.label_level for row in rows[video]} == {"trailer"}

    # As docs/bring-your-own.md says: four trailers' splits cannot look alike, so the example
    # turns the drift checks off (1.0: the largest divergence); all else is checked as always.
    no_drift = ("validate.drift_threshold=1.0", "validate.genre_drift_threshold=1.0")
    result = trailers("validate", *path_overrides(tmp_path), *no_drift, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_weaken_relabels_one_split_at_trailer_level_through_to_annotations(tmp_path):
    """configs/weak.yaml's step: the train split's segments become one trailer-level row per
    genre (with the video column), the other splits keep theirs; a second run changes nothing."""
    spreadsheet_csv(
        tmp_path / "annotations.csv",
        [
            "trailer_id,start_s,end_s,genre",
            "000,0.0,2.0,comedy",
            "000,2.5,4.0,action",
            "000,4.5,6.0,comedy",
            "001,0.0,3.0,horror",
        ],
    )
    spreadsheet_csv(tmp_path / "splits.csv", ["trailer_id,split", "000,train", "001,val"])
    script = ROOT / "docs" / "bring_your_own" / "weaken.py"
    command = [sys.executable, str(script), str(tmp_path), "train"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "1 train trailers labelled at trailer level" in done.stdout
    labelled, problems = labelled_trailers(tmp_path / "annotations.csv", tmp_path / "splits.csv")
    assert problems == []
    weak = labelled["000"]
    assert all(segment.whole_trailer for segment in weak.segments)
    assert sorted(segment.genre for segment in weak.segments) == ["action", "comedy"]
    assert weak.video == "trailer_000.mp4"
    assert [(seg.start_s, seg.end_s) for seg in labelled["001"].segments] == [(0.0, 3.0)]
    first = (tmp_path / "annotations.csv").read_bytes()
    subprocess.run(command, capture_output=True, check=True)
    assert (tmp_path / "annotations.csv").read_bytes() == first


def weaken_module():
    """docs/bring_your_own/weaken.py imported in-process (it sits beside to_annotations.py)."""
    folder = str(ROOT / "docs" / "bring_your_own")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import weaken

    return weaken


def test_segment_fraction_keeps_that_many_train_trailers_by_a_seeded_nested_choice():
    keep = weaken_module().keep_segments
    ids = [f"{number:03d}" for number in range(80)]
    assert keep(ids, 0.0, 0) == set()
    assert keep(ids, 1.0, 0) == set(ids)
    half = keep(ids, 0.5, 0)
    assert len(half) == 40 and half == keep(list(reversed(ids)), 0.5, 0)
    assert half != keep(ids, 0.5, 1)
    assert keep(ids, 0.1, 0) <= keep(ids, 0.25, 0) <= half  # 8, 20, 40: nested
    assert [len(keep(ids, f, 0)) for f in (0.1, 0.25)] == [8, 20]
    assert len(keep(ids[:5], 0.5, 0)) == 3  # round half up


def test_weaken_config_keeps_the_chosen_segments_and_refuses_a_weakened_file(tmp_path):
    """``--config`` reads ``weaken:`` and the seed; half the train trailers keep their timed
    rows, the other half get trailer-level ones; asking a weakened file for more segments is
    one line naming the file and trailer, exit 2, the file unchanged."""
    rows = ["trailer_id,start_s,end_s,genre"]
    rows += [f"{n:03d},0.0,2.0,comedy" for n in range(4)] + ["004,0.0,3.0,horror"]
    spreadsheet_csv(tmp_path / "annotations.csv", rows)
    splits = ["trailer_id,split", *(f"{n:03d},train" for n in range(4)), "004,val"]
    spreadsheet_csv(tmp_path / "splits.csv", splits)
    script = ROOT / "docs" / "bring_your_own" / "weaken.py"
    base = [sys.executable, str(script), "--config", str(SMOKE_CONFIG)]
    base += ["--set", f"paths.data_dir={tmp_path}"]
    half = [*base, "--set", "weaken.segment_fraction=0.5"]
    done = subprocess.run(half, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "2 train trailers labelled at trailer level (segment fraction 0.5, seed" in done.stdout
    labelled, problems = labelled_trailers(tmp_path / "annotations.csv", tmp_path / "splits.csv")
    assert problems == []
    levels = {tid: labelled[tid].segments[0].whole_trailer for tid in labelled}
    seed = load_config(SMOKE_CONFIG).seed
    kept = weaken_module().keep_segments([f"{n:03d}" for n in range(4)], 0.5, seed)
    assert {tid for tid, whole in levels.items() if not whole} == kept | {"004"}
    before = (tmp_path / "annotations.csv").read_bytes()
    more = [*base, "--set", "weaken.segment_fraction=1.0"]
    refused = subprocess.run(more, capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "should keep its segments (segment fraction 1.0) but has only trailer-level" in (
        refused.stderr
    )
    assert (tmp_path / "annotations.csv").read_bytes() == before
    bad = subprocess.run(
        [*base, "--set", "weaken.segment_fraction=2"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "weaken.segment_fraction: Input should be less than or equal to 1" in bad.stderr


CONTAINERS = {".mkv": ("matroska", "libx264"), ".mpg": ("mpeg", "mpeg2video")}


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_folder_with_no_video_is_an_error(tmp_path):
    folder = tmp_path / "catalogue"
    folder.mkdir()
    (folder / "notes.txt").write_text("no video here\n")
    overrides = ("decode.source=folder", f"decode.input_dir={folder}")
    result = trailers("decode", *path_overrides(tmp_path), *overrides, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"trailers decode: videos folder {folder}: no video in it (decode.video_extensions: "
        ".mp4 .m4v .mov .mkv .webm .avi .ts .m2ts .mts .mpg .mpeg .wmv .flv .3gp .ogv)"
    ]


@pytest.mark.parametrize("extensions", ["[mp4]", "[.MP4]", "[]"])
def test_video_extensions_are_checked(extensions):
    with pytest.raises(ConfigError, match=r"decode\.video_extensions: expected lower-case"):
        load_config(SMOKE_CONFIG, [f"decode.video_extensions={extensions}"])
