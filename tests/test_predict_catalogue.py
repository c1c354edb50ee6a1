"""Catalogue predict on Beam: the same outputs as predicting one video after another, on the
local runner and on a real Dask cluster by address; a broken file fails alone; the catalogue is
a folder or a spreadsheet CSV, with messy names."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask_cluster import tasks_by_worker
from distributed import Client
from helpers import smoke_config, trailers_command
from media import write_video

from pipeline import GENRES
from pipeline.core.errors import StageError
from pipeline.predict import run
from pipeline.predict.catalogue import STATUS_DIR, catalogue_entries
from pipeline.predict.outputs import CATALOGUE_COLUMNS, CATALOGUE_FILE, output_names

pytestmark = pytest.mark.xdist_group("dask")
"""One Dask cluster per run: every test that needs one runs in one xdist worker."""

SMOKE_NAMES = ("Amélie (2001) #2.mp4", "sub dir/clip one.mp4", "plain.mp4")
"""Where the three smoke trailers go in the catalogue: accents, spaces and a subfolder."""
SMALL = "small clip.mp4"
"""A frame-coded 64x48 clip: far smaller than the demo's train videos (the drift warnings)."""
VIDEOS = (*SMOKE_NAMES, SMALL)
DEMO_LINE = "trained only on the synthetic demo corpus"
BROKEN = "broken.mp4"
EXTENSIONS = (".mp4",)


def catalogue_predict(
    root: Path, catalogue: Path, out: Path, *overrides: str
) -> subprocess.CompletedProcess:
    """``trailers predict --catalogue`` with the trained corpus's classifier."""
    command = trailers_command(
        "predict",
        f"paths.models_dir={root / 'models'}",
        *overrides,
        "--no-html",
        f"--out={out}",
        f"--catalogue={catalogue}",
    )
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def model_loads(address: str) -> Iterator[dict[str, int]]:
    """How many times each worker of the Dask cluster loaded a model for catalogue predict
    while the block ran (filled when it ends)."""

    def count() -> None:  # nested, so that Dask ships it by value to the workers
        from pipeline.predict import catalogue

        original = catalogue.load

        def counted(*args, **kwargs):
            catalogue.loads_counted += 1
            return original(*args, **kwargs)

        catalogue.loads_counted, catalogue.load, catalogue.load_uncounted = 0, counted, original

    def counted_and_restored() -> int:
        from pipeline.predict import catalogue

        catalogue.load = catalogue.load_uncounted
        return catalogue.loads_counted

    loads: dict[str, int] = {}
    with Client(address) as client:
        client.run(count)
        yield loads
        loads.update(client.run(counted_and_restored))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def catalogue(trained_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three smoke trailers under messy names, a small clip, a text file named .mp4,
    and notes."""
    folder = tmp_path_factory.mktemp("catalogue") / "my trailers"
    smoke = sorted((trained_corpus / "data" / "videos").glob("*.mp4"))
    for name, video in zip(SMOKE_NAMES, smoke, strict=False):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, folder / name)
    write_video(folder / SMALL, 50, 25)
    (folder / BROKEN).write_text("not a video\n")
    (folder / "notes.txt").write_text("not listed: not a video extension\n")
    return folder


@pytest.fixture(scope="module")
def one_by_one(trained_corpus: Path, catalogue: Path, tmp_path_factory) -> Path:
    """The three good videos through predict's own loop, in this process (``VIDEO...``)."""
    out = tmp_path_factory.mktemp("one_by_one")
    config = smoke_config(trained_corpus)
    run.run(config, [catalogue / name for name in VIDEOS], out=out, html=False)
    return out


def assert_like_one_by_one(out: Path, one_by_one: Path, result: subprocess.CompletedProcess):
    """Every good video's files equal predict's one by one; the broken file is one line; the
    demo model's line is said once, as one by one says it (the small clip is far)."""
    assert result.returncode == 1, result.stderr[-3000:]
    expected = sorted(path.name for path in one_by_one.iterdir())
    assert sorted(path.name for path in out.iterdir()) == sorted([*expected, CATALOGUE_FILE])
    for name in expected:
        if name.endswith((".timeline.csv", ".json")):
            assert (out / name).read_bytes() == (one_by_one / name).read_bytes(), name
    lines = [line for line in result.stderr.splitlines() if BROKEN in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "not a readable video" in lines[0] and "Traceback" not in result.stderr
    assert not re.search(r"Unable to import IPython|Exception ignored", result.stderr)
    assert "4/5 videos" in result.stderr and "5/5 videos" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("trailers predict: 1 of 5 videos")
    demo = [line for line in result.stderr.splitlines() if DEMO_LINE in line]
    assert len(demo) == 1, result.stderr[-3000:]  # said by the driver, once
    assert not (out / STATUS_DIR).exists()


def assert_summary(out: Path, listed: list[str]) -> None:
    """One catalogue.csv row per listed video, in order: its trailer-level scores and genres
    as its JSON has them, or empty scores and the reason it failed."""
    rows = read_rows(out / CATALOGUE_FILE)
    assert tuple(rows[0]) == CATALOGUE_COLUMNS
    assert [row["video"] for row in rows] == listed
    names = output_names([Path(video) for video in listed])
    for row, name in zip(rows, names, strict=True):
        assert row["name"] == name
        if row["video"] == BROKEN:
            assert row["error"].startswith("not a readable video")
            assert all(row[genre] == "" for genre in GENRES) and row["genres_present"] == ""
            continue
        summary = json.loads((out / f"{name}.json").read_text())
        assert row["error"] == ""
        assert [float(row[genre]) for genre in GENRES] == [
            summary["trailer_scores"][genre] for genre in GENRES
        ]
        assert row["genres_present"].split() == summary["genres_present"]


# The first catalogue run may build the shared trained_corpus (past 300 s on a loaded 2-core
# machine), as test_predict's tests may.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_folder_on_the_local_runner_equals_one_by_one(
    trained_corpus: Path, catalogue: Path, one_by_one: Path, tmp_path: Path
) -> None:
    result = catalogue_predict(trained_corpus, catalogue, tmp_path / "out")
    assert_like_one_by_one(tmp_path / "out", one_by_one, result)
    assert_summary(tmp_path / "out", sorted([*VIDEOS, BROKEN]))
    assert "notes.txt: skipped (not a video extension" in result.stderr
    # The local runner's workers are this process's threads: their drift warnings are its own.
    far = [line for line in result.stderr.splitlines() if "far from the model's training" in line]
    assert far and all(SMALL in line for line in far), result.stderr[-3000:]
    assert any("frame size 64x48 far" in line for line in far), result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_csv_on_a_dask_cluster_by_address_equals_one_by_one(
    trained_corpus: Path, catalogue: Path, one_by_one: Path, dask_scheduler: str, tmp_path: Path
) -> None:
    listed = [BROKEN, *VIDEOS]
    sheet = catalogue / "list.csv"  # as a spreadsheet saves it: BOM, CRLF, more columns
    rows = ["title,video", *(f'"T{index}","{video}"' for index, video in enumerate(listed)), ","]
    sheet.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode())
    overrides = ("beam.runner=dask", f"beam.scheduler_address={dask_scheduler}")
    with tasks_by_worker(dask_scheduler) as tasks, model_loads(dask_scheduler) as loads:
        result = catalogue_predict(trained_corpus, sheet, tmp_path / "out", *overrides)
    assert_like_one_by_one(tmp_path / "out", one_by_one, result)
    assert_summary(tmp_path / "out", listed)
    assert len(tasks) == 2, tasks  # both worker processes predicted videos
    assert list(loads.values()) == [1, 1], loads  # each loaded the model once for its videos


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("title\nplain.mp4\n", "no 'video' column (header: 'title')"),
        ("video,title\nplain.mp4,a\n,b\n", "line 3: empty 'video' cell"),
        ("video\n\n", "lists no video"),
    ],
)
def test_a_bad_catalogue_csv_is_one_line(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(StageError, match=f"list.csv.*{re.escape(problem)}"):
        catalogue_entries(tmp_path / "list.csv", EXTENSIONS)


def test_a_catalogue_is_a_folder_or_a_csv(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("videos?\n")
    with pytest.raises(StageError, match="no video in it"):
        catalogue_entries(tmp_path, EXTENSIONS)
    with pytest.raises(StageError, match="takes a folder of videos or a .csv file"):
        catalogue_entries(tmp_path / "notes.txt", EXTENSIONS)
    with pytest.raises(StageError, match="no such folder or CSV file"):
        catalogue_entries(tmp_path / "missing", EXTENSIONS)


def test_csv_videos_are_relative_to_the_csv_and_names_unique(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text(
        "video\na/Amélie (2001).mp4\nb/Amélie (2001).mp4\n/x/c.mp4\n"
    )
    entries = catalogue_entries(tmp_path / "list.csv", EXTENSIONS)
    assert [entry.path for entry in entries] == [
        tmp_path / "a" / "Amélie (2001).mp4",
        tmp_path / "b" / "Amélie (2001).mp4",
        Path("/x/c.mp4"),
    ]
    assert [entry.name for entry in entries] == ["Amelie_2001_", "Amelie_2001_-2", "c"]


def test_videos_and_a_catalogue_together_are_a_usage_error(tmp_path: Path) -> None:
    command = trailers_command("predict", f"--catalogue={tmp_path}")
    result = subprocess.run([*command, "a.mp4"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "not allowed with" in result.stderr.splitlines()[-1]
