"""The predict stage: streaming equals whole-sequence inference, real videos in, three outputs per
video out, the same timelines through an MLflow model URI, and bad videos failing alone."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import SmallDisk, smoke_config, trailers_command
from media import FFMPEG_LINE, bigbuckbunny, cut_short, write_video

from pipeline import GENRES
from pipeline.core import model_card
from pipeline.core.io import DiskFull
from pipeline.core.timeline import SegmentRule, config_rules, rules_to_dict
from pipeline.core.video import sample_times, sample_video
from pipeline.model import stacked_outputs
from pipeline.predict.loader import load
from pipeline.predict.one_video import predict_video
from pipeline.predict.outputs import output_names
from pipeline.predict.run import run as predict_videos
from pipeline.predict.stream import StreamingModel, prefetched

# Every test needs the trained smoke models: the first one here may build the shared
# trained_corpus (synth, decode, validate, two trainings), past 300 s on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("predict")]


ROOM_FOR_THE_CSV = 8 * 1024
"""What the full-disk test leaves free: a smoke trailer's timeline CSV fits (two tmpfs pages),
its viewer page and picture do not."""


def predict(root: Path, *args: str, out: Path, html: bool = False) -> subprocess.CompletedProcess:
    """``trailers predict ARGS...`` (flags and videos) with the trained corpus's models and
    MLflow store."""
    command = trailers_command(
        "predict",
        f"paths.models_dir={root / 'models'}",
        f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        "--html" if html else "--no-html",
        f"--out={out}",
    )
    return subprocess.run([*command, *args], cwd=root, capture_output=True, text=True, check=False)


def smoke_video(root: Path) -> Path:
    return sorted((root / "data" / "videos").glob("*.mp4"))[0]


def unseen_trailer(root: Path) -> Path:
    """The first demo trailer of the test split: never seen in training."""
    splits = dict(line.split(",") for line in (root / "data" / "splits.csv").read_text().split())
    trailer_id = min(trailer for trailer, split in splits.items() if split == "test")
    return root / "data" / "videos" / f"trailer_{trailer_id}.mp4"


def sampled(video: Path, decode: dict, chunk_frames: int):
    """The decode stage's sampling and chunks of ``video`` at a model's decode settings."""
    return sample_video(
        video, decode["fps"], decode["height"], decode["width"], decode["aspect"], chunk_frames
    )


def read_timeline(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], np.array(rows[1:], dtype=float)


@pytest.fixture(scope="module")
def predicted(trained_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """One ``trailers predict`` run: a real 720p clip, a text file named .mp4, a smoke test
    trailer, an AV1 clip (decord cannot open it) and a file cut short."""
    work = tmp_path_factory.mktemp("predict")
    bad = work / "broken.mp4"
    bad.write_text("not a video\n")
    av1 = write_video(work / "web clip.mkv", 50, 25, codec="libsvtav1")
    whole = write_video(work / "whole.mp4", 100, 25, size=(160, 120), faststart=True)
    cut = cut_short(whole, work / "download.mp4")
    videos = [bigbuckbunny(), bad, unseen_trailer(trained_corpus), av1, cut]
    result = predict(trained_corpus, *map(str, videos), out=work / "out", html=True)
    return work / "out", videos, result


def test_streamed_chunks_equal_the_whole_sequence(trained_corpus: Path) -> None:
    loaded = load(str(trained_corpus / "models" / "classifier"), smoke_config(trained_corpus))
    decode = dataclasses.asdict(loaded.decode)
    video = smoke_video(trained_corpus)
    _, chunks = sampled(video, decode, chunk_frames=5)
    streaming = StreamingModel(loaded.network)
    streamed = streaming.timeline(prefetched(chunks))
    _, whole_chunks = sampled(video, decode, chunk_frames=10_000)
    frames = np.concatenate(list(whole_chunks))
    whole = stacked_outputs(loaded.network(frames[None], training=False))[0]
    assert streamed.shape == (len(frames), len(GENRES)) and len(frames) > 5
    assert np.abs(streamed - whole).max() <= 1e-5

    # The negative control: the same chunks with the state reset between them (each its own
    # timeline) are not the whole sequence, so carrying the state is what makes them equal.
    _, chunks = sampled(video, decode, chunk_frames=5)
    forgetful = np.concatenate([streaming.timeline([chunk]) for chunk in chunks])
    assert np.abs(forgetful - whole).max() > 1e-3


def test_a_real_video_gives_a_timeline_per_sampled_frame(predicted) -> None:
    out, videos, _ = predicted
    name = "bigbuckbunny"
    for suffix in (".timeline.csv", ".json", ".png", ".html"):
        assert (out / f"{name}{suffix}").is_file(), suffix
    summary = json.loads((out / f"{name}.json").read_text())
    sampling, chunks = sampled(videos[0], summary["decode"], chunk_frames=1)
    chunks.close()
    header, table = read_timeline(out / f"{name}.timeline.csv")
    assert header == ["time_s", *GENRES]
    assert len(table) == len(sampling.times) == summary["frames"]
    np.testing.assert_allclose(table[:, 0], sampling.times, atol=1e-6)
    assert ((table[:, 1:] >= 0) & (table[:, 1:] <= 1)).all()
    assert set(summary["trailer_scores"]) == set(GENRES)
    assert set(summary["genres_present"]) <= set(GENRES)
    for segment in summary["segments"]:
        assert 0 <= segment["start_s"] < segment["end_s"] <= summary["duration_s"]
    assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_a_bad_video_fails_alone(predicted) -> None:
    out, videos, result = predicted
    bad = str(videos[1])
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if bad in line]
    assert len(lines) == 2, result.stderr  # the video's own line and the stage's summary
    assert "not a readable video" in lines[0] and "Traceback" not in result.stderr
    assert not list(out.glob("broken*"))
    assert (out / f"{videos[2].stem}.timeline.csv").is_file()


def test_av1_and_a_file_cut_short_are_read_and_ffmpeg_stays_quiet(predicted) -> None:
    out, videos, result = predicted
    av1 = json.loads((out / f"{output_names(videos)[3]}.json").read_text())
    assert av1["decoder"] == "pyav" and av1["missing_s"] == 0
    assert av1["frames"] == len(sample_times(2.0, av1["decode"]["fps"]))
    cut = json.loads((out / "download.json").read_text())
    assert 1.0 < cut["missing_s"] < 3.0 and cut["duration_s"] + cut["missing_s"] == pytest.approx(4)
    warned = [line for line in result.stderr.splitlines() if "ends early" in line]
    assert len(warned) == 1 and str(videos[4]) in warned[0], result.stderr
    assert not FFMPEG_LINE.search(result.stderr), result.stderr


def test_the_demo_model_says_what_it_saw_when_a_real_clip_is_far_from_it(predicted) -> None:
    """With the demo model, the real clip gets a drift warning (validate's measure against the
    training split's statistics saved with the model) and the run one line saying the model saw
    only the synthetic demo; the demo's test trailer gets no warning. The JSON says the same,
    with the model's card and evaluate figures."""
    out, videos, result = predicted
    lines = result.stderr.splitlines()
    far = [line for line in lines if "far from the model's training data" in line]
    assert any(str(videos[0]) in line for line in far), result.stderr
    assert not any(str(videos[2]) in line for line in far), result.stderr
    demo = [line for line in lines if "trained only on the synthetic demo corpus" in line]
    assert len(demo) == 1 and "train 2 trailers" in demo[0], result.stderr
    real = json.loads((out / "bigbuckbunny.json").read_text())
    assert real["drift"]["far"] and real["trained_on"]["synthetic"]
    assert real["evaluation"]["split"] == "test" and 0 <= real["evaluation"]["macro_ap"] <= 1
    trailer = json.loads((out / f"{videos[2].stem}.json").read_text())
    assert trailer["drift"]["far"] == []
    assert set(trailer["drift"]["divergence"]) == {"frame_brightness", "frame_motion"}
    # Its frame size too: the real clip's 1280x720 is far beyond the demo's train videos'.
    trained = real["trained_on"]["frame_size"]
    sized = [line for line in lines if "far from the model's training videos" in line]
    low, high = "x".join(map(str, trained["min"])), "x".join(map(str, trained["max"]))
    assert len([line for line in sized if str(videos[0]) in line]) == 1, result.stderr
    assert f"frame size 1280x720 far from the model's training videos ({low} to {high};" in (
        "".join(sized)
    )
    assert not any(str(videos[2]) in line for line in sized), result.stderr
    assert (
        real["drift"]["frame_size"]["video"] == [1280, 720] and "frame_size" in real["drift"]["far"]
    )
    assert trailer["drift"]["frame_size"]["trained"] == trained


def test_a_demo_test_trailer_alone_gets_neither_line(
    trained_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = unseen_trailer(trained_corpus)
    with caplog.at_level(logging.INFO, logger="pipeline.predict"):
        predict_videos(smoke_config(trained_corpus), [video], out=tmp_path, html=False)
    assert (tmp_path / f"{video.stem}.json").is_file() and "wrote 1 timeline" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_an_mlflow_model_uri_gives_the_same_timeline(predicted, trained_corpus: Path) -> None:
    out, videos, _ = predicted
    card = json.loads((trained_corpus / "models" / "classifier" / "model.json").read_text())
    uri = f"runs:/{card['mlflow_run_id']}/model"
    through_uri = out.parent / "through_uri"
    result = predict(trained_corpus, f"--model={uri}", str(videos[2]), out=through_uri)
    assert result.returncode == 0, result.stderr[-2000:]
    name = f"{videos[2].stem}.timeline.csv"
    assert (through_uri / name).read_text() == (out / name).read_text()
    summary = json.loads((through_uri / f"{videos[2].stem}.json").read_text())
    assert summary["model"] == uri
    # The card and training statistics travel with the logged model: what it was trained on
    # and the drift check, as from its folder (the rules and figures are evaluate's, later).
    from_folder = json.loads((out / f"{videos[2].stem}.json").read_text())
    assert summary["trained_on"] == from_folder["trained_on"] and summary["trained_on"]
    assert summary["drift"] == from_folder["drift"] and summary["drift"]["divergence"]
    config = smoke_config(
        trained_corpus, f"tracking.tracking_uri=sqlite:///{trained_corpus}/mlflow.db"
    )
    registered = f"models:/{config.evaluate.registered_model_name}@{config.evaluate.alias}"
    loaded = load(registered, config)
    assert (
        loaded.trained_on
        == model_card.read(trained_corpus / "models" / "classifier").card.trained_on
    )
    assert loaded.statistics is not None and loaded.source == registered


def test_predict_reads_segments_by_the_models_tuned_rules_unless_told_not_to(
    trained_corpus: Path, tmp_path: Path
) -> None:
    shutil.copytree(trained_corpus / "models" / "classifier", tmp_path / "model")
    tuned = {genre: SegmentRule(onset=0.3, offset=0.2, min_segment_s=1.0) for genre in GENRES}
    model_card.write_rules(tmp_path / "model", tuned, tuned_on="val")
    loaded = load(str(tmp_path / "model"), smoke_config(tmp_path))
    assert loaded.rules == tuned
    streaming = StreamingModel(loaded.network)
    video = smoke_video(trained_corpus)
    for rules, expected in (("tuned", tuned), ("config", None)):
        config = smoke_config(tmp_path, f"timeline.rules={rules}")
        expected = expected or config_rules(config.timeline)
        predict_video(video, rules, loaded, streaming, config, tmp_path, html=False)
        summary = json.loads((tmp_path / f"{rules}.json").read_text())
        assert summary["segment_rules"] == rules_to_dict(expected)
        if rules == "tuned":
            lengths = [row["end_s"] - row["start_s"] for row in summary["segments"]]
            assert lengths and min(lengths) >= 1.0


def test_output_names_are_safe_and_unique() -> None:
    videos = [Path("a/clip.mp4"), Path("b/clip.mp4"), Path("c/my clip;rm.mov"), Path("d/.mp4")]
    assert output_names(videos) == ["clip", "clip-2", "my_clip_rm", "mp4"]


def test_an_unknown_model_uri_is_one_line(trained_corpus: Path, tmp_path: Path) -> None:
    result = predict(
        trained_corpus, "--model=runs:/0123456789abcdef/model", str(bigbuckbunny()), out=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("trailers predict: runs:/0123")
    assert "Traceback" not in result.stderr


def test_a_full_disk_stops_at_the_file_that_does_not_fit_and_the_rerun_writes_all(
    predicted, trained_corpus: Path, disk: SmallDisk
) -> None:
    """On a real full filesystem, room for the CSV and little more: one line naming the file
    that did not fit and the space; what was written is whole; freed, the rerun writes all
    four, the timeline as ``trailers predict`` wrote it."""
    out, videos, _ = predicted
    video, name = videos[2], videos[2].stem  # a smoke trailer
    loaded = load(str(trained_corpus / "models" / "classifier"), smoke_config(trained_corpus))
    streaming = StreamingModel(loaded.network)
    config, target = smoke_config(trained_corpus), disk.path / "out"
    disk.fill(leave=ROOM_FOR_THE_CSV)
    with pytest.raises(DiskFull) as failed:
        predict_video(video, name, loaded, streaming, config, target, html=True)
    assert re.fullmatch(
        rf"{re.escape(str(target / name))}\.(json|png|html): no space left on device "
        r"\((needs over [\d.]+ \w+, )?[\d.]+ \w+ free\); free space and rerun",
        str(failed.value),
    ), failed.value
    assert disk.leftovers() == []
    written = {path.name: path.read_bytes() for path in target.iterdir()}
    assert written[f"{name}.timeline.csv"] == (out / f"{name}.timeline.csv").read_bytes()
    if f"{name}.json" in written:
        json.loads(written[f"{name}.json"])

    disk.free()
    predict_video(video, name, loaded, streaming, config, target, html=True)
    assert sorted(path.name for path in target.iterdir()) == sorted(
        f"{name}{suffix}" for suffix in (".html", ".json", ".png", ".timeline.csv")
    )
    for suffix in (".timeline.csv", ".json"):
        assert (target / f"{name}{suffix}").read_bytes() == (out / f"{name}{suffix}").read_bytes()
    assert disk.leftovers() == []
