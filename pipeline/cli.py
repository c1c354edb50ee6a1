"""``trailers <stage>``: one subcommand per pipeline stage.

Exit codes: 0 success, 1 the stage failed (bad data, failed videos), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field

from pipeline.config import ConfigError, load_config
from pipeline.errors import StageError


@dataclass(frozen=True)
class Stage:
    module: str
    help: str
    flags: dict[str, dict] = field(default_factory=dict)


STAGES: dict[str, Stage] = {
    "synth": Stage("pipeline.synth", "generate the built-in demo corpus of procedural trailers"),
    "decode": Stage("pipeline.decode", "decode trailers into channels_first uint8 .npy shards"),
    "validate": Stage(
        "pipeline.validate",
        "check the shards with TFDV: integrity, schema, drift and skew",
        {
            "--update-schema": {
                "action": "store_true",
                "help": "re-infer the schema from the train split on purpose (review, then commit)",
            }
        },
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailers", description="Per-frame genre timelines for movie trailers."
    )
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, stage in STAGES.items():
        sub = subparsers.add_parser(name, help=stage.help, description=stage.help)
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
        for flag, options in stage.flags.items():
            sub.add_argument(flag, **options)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    try:
        config = load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"trailers {args.stage}: config error: {exc}", file=sys.stderr)
        return 2
    stage_options = {
        key: value for key, value in vars(args).items() if key not in ("stage", "config", "set")
    }
    module = importlib.import_module(STAGES[args.stage].module)
    try:
        module.run(config, **stage_options)
    except StageError as exc:
        print(f"trailers {args.stage}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
