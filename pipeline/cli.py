"""``trailers <stage>``: one subcommand per pipeline stage.

Exit codes: 0 success, 1 the stage failed (bad data, failed videos), 2 bad usage or config,
75 outputs written but the MLflow run lacks records (``trailers train|evaluate --sync`` sends
them), 130 interrupted (Ctrl-C). Every stage module has ``run(config, **flags)``; the config
is checked before the stage's module, and its heavy libraries, are imported.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import __version__
from pipeline.core.config import Config, ConfigError, PathsConfig, load_config
from pipeline.core.errors import StageError
from pipeline.core.io import NO_SPACE, is_disk_full
from pipeline.infra.noise import configure, quiet_stderr, silence_workers


@dataclass(frozen=True)
class Stage:
    """A subcommand: the module whose ``run`` it calls, what it does, and what it reads and
    writes, in words built from the config's paths (so help and config never disagree);
    ``dvc``: whether it is a stage of ``dvc.yaml`` (predict is not: it reads the user's videos);
    ``one_of``: flags of which exactly one must be given (argparse reports any other use)."""

    module: str
    help: str
    reads: Callable[[PathsConfig], str]
    writes: Callable[[PathsConfig], str]
    flags: dict[str, dict] = field(default_factory=dict)
    dvc: bool = True
    one_of: tuple[str, ...] = ()


STAGES: dict[str, Stage] = {
    "synth": Stage(
        "pipeline.synth.run",
        "generate the built-in demo corpus of procedural trailers",
        reads=lambda paths: "the config only",
        writes=lambda paths: (
            f"{paths.video('<id>')}, {paths.annotations}, {paths.splits}, {paths.synth_receipt}"
        ),
    ),
    "decode": Stage(
        "pipeline.decode.run",
        "decode trailers into channels_first uint8 .npy shards",
        reads=lambda paths: (
            f"{paths.videos}, {paths.annotations}, {paths.splits} (or decode.input_dir), "
            f"{paths.synth_receipt}"
        ),
        writes=lambda paths: (
            f"{paths.shards}/ (shards, labels, {paths.manifest.name}), "
            f"{paths.decode_report}, {paths.metrics('decode')}"
        ),
    ),
    "validate": Stage(
        "pipeline.validate.run",
        "check the shards with TFDV: integrity, schema, drift and skew",
        reads=lambda paths: f"{paths.manifest}, the shards and labels it lists, {paths.schema}",
        writes=lambda paths: (
            f"{paths.stage_outputs('validate')}/ ({paths.validate_report.name}, "
            f"{paths.anomalies.name}, {paths.shard_features.name}, statistics/), "
            f"{paths.metrics('validate')}"
        ),
        flags={
            "--update-schema": {
                "action": "store_true",
                "help": "re-infer the schema from the train split on purpose (review, then commit)",
            }
        },
    ),
    "train": Stage(
        "pipeline.train.run",
        "train the ConvLSTM classifier (or the per-frame baseline) and record the run in MLflow; "
        "trailers labelled at trailer level train as train.weak_labels says (broadcast, or mil: "
        "one bag per trailer); run again after a kill, it resumes at the last finished epoch "
        "(the same settings: it ends as the run never killed would)",
        reads=lambda paths: (
            f"{paths.manifest} and the train and val shards, {paths.anomalies} (must have passed)"
        ),
        writes=lambda paths: (
            f"{paths.model('<model>')}/ (the network and its card), "
            f"{paths.train_outputs('<model>')}/history.csv, {paths.metrics('train_<model>')}, "
            "an MLflow run"
        ),
        flags={
            "--model": {
                "choices": ["classifier", "baseline"],
                "default": "classifier",
                "help": "the ConvLSTM classifier (model.cell) or the per-frame baseline "
                "(default: %(default)s)",
            },
            "--sync": {
                "action": "store_true",
                "help": "train nothing: send the MLflow records the model's earlier runs could "
                "not (the tracking server was away), then exit 0 if its runs are complete",
            },
        },
    ),
    "evaluate": Stage(
        "pipeline.evaluate.run",
        "score the classifier and the per-frame baseline per genre on a labelled split "
        "(evaluate.split) and measure the gain from time; frames and segments against "
        "segment labels only, trailer-level labels at trailer level; tune each genre's "
        "segment rule on val and store it with the model",
        reads=lambda paths: (
            f"{paths.model('classifier')}/, {paths.model('baseline')}/, {paths.manifest} and "
            "the val and test shards"
        ),
        writes=lambda paths: (
            f"{paths.metrics('evaluate')}, {paths.evaluate_report}, {paths.pr_curve('<genre>')}, "
            f"{paths.evaluate_figures}/, {paths.evaluate_viewer}/, each model's segment rules "
            "(in its folder), an MLflow run per model"
        ),
        flags={
            "--sync": {
                "action": "store_true",
                "help": "evaluate nothing: send the MLflow records (and registry alias) earlier "
                "evaluations could not (the tracking server was away), then exit 0 if their runs "
                "are complete",
            },
        },
    ),
    "predict": Stage(
        "pipeline.predict.run",
        "genre timelines of any videos, streamed through the trained model chunk by chunk",
        reads=lambda paths: (
            f"VIDEO... or --catalogue, {paths.model('classifier')}/ (the network, its card, "
            "its training split's statistics, which each video is compared with, its evaluate "
            "figures and the segment rules tuned on val, unless timeline.rules: config) or "
            "--model"
        ),
        writes=lambda paths: (
            f"{paths.stage_outputs('predict')}/ (or --out): <name>.timeline.csv, <name>.json, "
            "<name>.png, <name>.html (predict.html); with --catalogue, catalogue.csv too"
        ),
        flags={
            "videos": {
                "nargs": "*",
                "default": [],
                "metavar": "VIDEO",
                "help": "video files to predict, one after another",
            },
            "--catalogue": {
                "metavar": "DIR|CSV",
                "help": "predict every video of a folder, or of a CSV's video column (paths "
                "relative to the CSV), on the Beam runner (beam:), and summarise them in "
                "catalogue.csv",
            },
            "--model": {
                "metavar": "PATH|URI",
                "help": "a model folder, the .keras file in one or an MLflow model URI "
                "(runs:/<id>/model, models:/<name>@<alias>, models:/m-<id>); default: the "
                "trained classifier",
            },
            "--out": {"metavar": "DIR", "help": "where the outputs go (default: see writes)"},
            "--html": {
                "action": argparse.BooleanOptionalAction,
                "help": "write the timeline viewer page too (default: predict.html)",
            },
        },
        dvc=False,
        one_of=("videos", "--catalogue"),
    ),
}
COMMON = ("stage", "config", "set", "verbose", "quiet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailers", description="Per-frame genre timelines for movie trailers."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    paths = PathsConfig()
    for name, stage in STAGES.items():
        sub = subparsers.add_parser(
            name,
            help=stage.help,
            description=f"{stage.help}.\n\nreads:  {stage.reads(paths)}\n"
            f"writes: {stage.writes(paths)}\n(the default paths; a config's paths: section moves "
            "them)",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "--config", default="configs/pipeline.yaml", help="YAML config (default: %(default)s)"
        )
        sub.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one config value (repeatable), e.g. --set decode.fps=12",
        )
        loudness = sub.add_mutually_exclusive_group()
        loudness.add_argument(
            "-v", "--verbose", action="store_true", help="show everything, library lines too"
        )
        loudness.add_argument(
            "-q", "--quiet", action="store_true", help="show only warnings and errors"
        )
        exclusive = sub.add_mutually_exclusive_group(required=True) if stage.one_of else None
        for flag, options in stage.flags.items():
            (exclusive if flag in stage.one_of else sub).add_argument(flag, **options)
    return parser


def make_folders(config: Config) -> None:
    """Create the folders stages write under; ConfigError names the key that cannot be."""
    paths = config.paths
    for key, folder in (
        ("paths.data_dir", paths.data),
        ("paths.outputs_dir", paths.outputs),
        ("paths.metrics_dir", Path(paths.metrics_dir)),
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{key}: cannot create {folder} ({exc.strerror})") from None


def _interrupt(verbosity: int, signum: int, frame: object) -> None:
    """Ctrl-C: unwind the stage (its atomic writes delete their temporary files) without the
    complaints of Beam's workers, whose decoders just got the same Ctrl-C (``-v`` keeps them)."""
    if verbosity <= 0:
        silence_workers()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbosity = 1 if args.verbose else -1 if args.quiet else 0
    configure(verbosity)
    try:
        config = load_config(args.config, args.set)
        make_folders(config)
    except ConfigError as exc:
        print(f"trailers {args.stage}: config error: {exc}", file=sys.stderr)
        return 2
    flags = {key: value for key, value in vars(args).items() if key not in COMMON}
    signal.signal(signal.SIGINT, functools.partial(_interrupt, verbosity))
    try:
        with quiet_stderr(verbosity):
            module = importlib.import_module(STAGES[args.stage].module)
        module.run(config, **flags)
    except StageError as exc:
        print(f"trailers {args.stage}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk met outside the atomic writes (which name the file)
        if not is_disk_full(exc):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"trailers {args.stage}: {where}{NO_SPACE}; free space and rerun", file=sys.stderr)
        return StageError.exit_code
    except KeyboardInterrupt:
        print(
            f"trailers {args.stage}: interrupted; every output is whole or absent, rerun to finish",
            file=sys.stderr,
            flush=True,
        )
        # Now, not at interpreter exit: Beam's worker threads would go on starting parts until
        # their queue is empty. The main thread has unwound (its atomic writes deleted their
        # temporary files); the decoder processes got the same Ctrl-C.
        os._exit(130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
