"""The DVC pipeline, for real: `dvc repro` on the smoke config runs every stage, then nothing;
settings that only change how a stage runs rerun nothing; code a stage imports reruns it."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo
from helpers import REPRO_LOG, ROOT, dvc

from pipeline.cli import STAGES
from pipeline.core import model_card
from pipeline.core.config import load_config


def stage_names(project: Path = ROOT) -> list[str]:
    """dvc.yaml's stages, ``foreach`` ones expanded (``train@classifier``)."""
    with Repo(str(project)) as repo:
        return [stage.addressing for stage in repo.index.stages]


def ran(output: str | subprocess.CompletedProcess) -> set[str]:
    """The stages a ``dvc repro`` ran, from what it printed."""
    printed = output if isinstance(output, str) else output.stdout
    return {stage for stage in stage_names() if f"Running stage '{stage}'" in printed}


def set_params(config: Path, **changes: object) -> None:
    """Change keys (``section.key``) of a config file in place."""
    raw = yaml.safe_load(config.read_text())
    for key, value in changes.items():
        section, name = key.split(".")
        raw[section][name] = value
    config.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture
def project(trained_corpus: Path, tmp_path: Path) -> Path:
    """A copy of the session's smoke project, reproduced once (see conftest's trained_corpus)."""
    return Path(shutil.copytree(trained_corpus, tmp_path / "project"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dvc_reruns_exactly_what_changed(project: Path):
    assert ran((project / REPRO_LOG).read_text()) == set(stage_names())
    assert (project / "data" / "shards" / "manifest.jsonl").stat().st_size > 0
    metrics = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    files = metrics[""]["data"]
    with Repo(str(project)) as repo:
        declared = {out.def_path for stage in repo.index.stages for out in stage.outs if out.metric}
    assert set(files) == declared and "metrics/decode.json" in declared
    for name, content in files.items():  # one row of summary numbers per file: no lists, no maps
        assert all(type(value) in (int, float) for value in content["data"].values()), name
    summary = {name: (project / name).read_bytes() for name in files}

    assert ran(dvc(project, "repro")) == set()
    dvc(project, "repro", "--force", "--single-item", "decode")
    dvc(project, "repro", "--force", "--single-item", "validate")
    assert {name: (project / name).read_bytes() for name in files} == summary, (
        "a rerun with nothing changed must leave the git-tracked metrics as they were"
    )

    config = project / "configs" / "pipeline.yaml"
    set_params(  # how the stages run, never what they write
        config,
        **{
            "beam.num_workers": 1,
            "beam.direct_running_mode": "in_memory",
            "decode.decoder_threads": 2,
            "decode.split_videos": False,
            "decode.stall_timeout_s": 60.0,
            "decode.worker_max_videos": 3,
            "validate.chunk_frames": 16,
            "validate.direct_running_mode": "multi_threading",
        },
    )
    assert ran(dvc(project, "repro")) == set()

    downstream = {"train@classifier", "train@baseline", "evaluate"}
    manifest = project / "pipeline" / "core" / "manifest.py"  # imported by all but synth
    manifest.write_text(manifest.read_text() + "\n# a change to code the stages import\n")
    status = json.loads(dvc(project, "status", "--json").stdout)
    assert set(status) == {"decode", "validate", *downstream}, status

    set_params(config, **{"decode.fps": 4.0})
    assert ran(dvc(project, "repro", "decode")) == {"decode"}  # what it writes changed:
    assert set(json.loads(dvc(project, "status", "--json").stdout)) == {"validate", *downstream}


def imported_files(module: str) -> set[Path]:
    """The pipeline's source files that ``trailers <stage>`` may load to run ``module``: the
    closure of the import statements of the CLI and the stage's module, those inside functions
    too (a lazy import runs only on some paths, the Dask runner's for one), and each imported
    module's packages. Read from the code rather than by importing it in a fresh process (as
    earlier: what that process loaded, lazy imports missed, 5 s of TensorFlow per stage)."""
    todo, found = ["pipeline.cli", module], {}
    while todo:
        name = todo.pop()
        path = source_file(name)
        if name in found or path is None:
            continue
        found[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:end]) for end in range(1, len(parts))]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:  # a name may be a module
                todo += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return {path.relative_to(ROOT) for path in found.values()}


def source_file(module: str) -> Path | None:
    """The project's file for ``module``, None for a module from elsewhere."""
    base = ROOT.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


DVC_STAGES = [name for name, stage in STAGES.items() if stage.dvc]


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", DVC_STAGES)
def test_each_stage_depends_on_all_the_code_it_runs(stage: str):
    spec = dvc_stages()[stage]
    deps = [Path(dep) for dep in spec.get("do", spec)["deps"]]
    missing = [
        str(path)
        for path in imported_files(STAGES[stage].module)
        if not any(path == dep or dep in path.parents for dep in deps)
    ]
    assert not missing, f"dvc.yaml: stage {stage} imports {missing} but does not depend on them"


def model_files(folder: Path) -> set[Path]:
    """What train writes into a model's folder and evaluate reads (train also copies the
    training statistics there, evaluate adds its segment rules and figures)."""
    return {model_card.network_file(folder), folder / model_card.CARD_FILE}


def test_dvc_paths_are_the_configs_paths():
    """dvc.yaml takes its paths from the config's `paths:` section (vars); resolved, they are
    the files the stages read and write as PathsConfig derives them."""
    paths = load_config(ROOT / "configs" / "pipeline.yaml").paths
    expected_outs = {
        "synth": {paths.videos, paths.annotations, paths.splits, paths.synth_receipt},
        "decode": {paths.shards, paths.decode_report, paths.metrics("decode")},
        "validate": {paths.stage_outputs("validate"), paths.metrics("validate")},
        **{
            f"train@{model}": {
                *model_files(paths.model(model)),
                model_card.statistics_file(paths.model(model)),
                paths.metrics(f"train_{model}"),
                paths.train_outputs(model) / "history.csv",
            }
            for model in ("classifier", "baseline")
        },
        "evaluate": {
            model_card.rules_file(paths.model("classifier")),
            model_card.rules_file(paths.model("baseline")),
            model_card.evaluation_file(paths.model("classifier")),
            model_card.evaluation_file(paths.model("baseline")),
            paths.evaluate_report,
            paths.evaluate_figures,
            paths.evaluate_viewer,
            paths.pr_curves,
            paths.metrics("evaluate"),
        },
    }
    expected_data_deps = {
        "synth": set(),
        "decode": {paths.videos, paths.annotations, paths.splits, paths.synth_receipt},
        "validate": {paths.shards, paths.schema},
        "train@classifier": {paths.shards, paths.stage_outputs("validate")},
        "train@baseline": {paths.shards, paths.stage_outputs("validate")},
        "evaluate": {
            *model_files(paths.model("classifier")),
            *model_files(paths.model("baseline")),
            paths.shards,
        },
    }
    with Repo(str(ROOT)) as repo:
        stages = {stage.addressing: stage for stage in repo.index.stages}
        assert {name.partition("@")[0] for name in stages} == set(DVC_STAGES)
        for name, stage in stages.items():
            assert {Path(out.def_path) for out in stage.outs} == expected_outs[name], name
            data_deps = {
                Path(dep.def_path)
                for dep in stage.deps
                if not dep.def_path.startswith(("pipeline", "configs/pipeline.yaml"))
            }
            assert data_deps == expected_data_deps[name], name
