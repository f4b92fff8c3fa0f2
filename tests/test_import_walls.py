"""The walls between layers (issue 27), read from the source's import statements (module level and
inside functions alike): the library never imports the stages or the apps, and a stage imports no
other stage — what stages share lives in the library or in the stage kit (``movies2scenes/stages/kit.py``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "movies2scenes"
KIT = ("kit", "protocol", "executors")  # what every stage shares
STAGES = sorted(p.stem for p in (PACKAGE / "stages").glob("*.py") if not p.stem.startswith("_") and p.stem not in KIT)
ABOVE = ("movies2scenes.stages", "movies2scenes.apps", "movies2scenes.cli")  # what the library never imports


def imported(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}  # `from movies2scenes.stages import evaluate`
    return out


def test_the_library_never_imports_stages_or_apps():
    library = [p for p in PACKAGE.rglob("*.py")
               if p.relative_to(PACKAGE).parts[0] not in ("stages", "apps", "cli.py")]
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported(p) if m.startswith(ABOVE))
                 for p in library}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_a_stage_imports_no_other_stage():
    offenders = {}
    for path in [*(PACKAGE / "stages").glob("*.py"), *(PACKAGE / "apps").rglob("*.py")]:
        own = f"movies2scenes.stages.{path.stem}"
        found = sorted(m for m in imported(path)
                       if any(m == f"movies2scenes.stages.{s}" or m.startswith(f"movies2scenes.stages.{s}.")
                              for s in STAGES) and not m.startswith(own))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_models_stand_below_training_and_data():
    """models/ imports neither the training loop, the monitor nor data loading; the ViT factory
    imports neither the other backbones nor the folder format (no import circle)."""
    below = {"movies2scenes.training", "movies2scenes.monitor", "movies2scenes.data"}
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported(p) if m.split(".")[:2] != ["movies2scenes", "models"]
                                                  and any(m == b or m.startswith(b + ".") for b in below))
                 for p in (ROOT / "movies2scenes" / "models").glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
    vit = imported(ROOT / "movies2scenes" / "models" / "vit.py")
    assert not {m for m in vit if m.startswith(("movies2scenes.models.backbone", "movies2scenes.models.folder"))}


def test_the_wall_test_sees_imports():
    """The checks above can fail: the CLI imports stages, and the reader resolves relative imports."""
    assert "movies2scenes.apps.demo_world" in imported(PACKAGE / "cli.py")
    assert "movies2scenes.stages.protocol" in imported(PACKAGE / "stages" / "export.py")
    assert len(STAGES) == 10


def test_the_makefile_runs_the_stages_in_the_layouts_order():
    """`make demo` lists the stage folders as targets in pipeline order (movies2scenes/layout.py),
    and each folder's target runs that stage's command."""
    import re

    from movies2scenes.layout import FOLDERS, STAGES

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    demo = re.search(r"^demo:(.*)$", makefile, re.M).group(1).split()
    assert [t for t in demo if t in FOLDERS or t == "eval"] == list(FOLDERS)
    for stage in STAGES:
        rule = re.search(rf"^\$\(RUN\)/{stage.folder}/DONE\.json:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert rule and f"$(M2S) {stage.command} " in rule.group(1), stage


def test_each_makefile_rule_depends_on_every_stage_its_stage_reads():
    """Issue 42 (3): `make scene_pairs` did not redo mining after the shots were detected again
    (its rule named the movie encoder alone): a rule's prerequisites hold the DONE record of every
    folder in its StageSpec.needs, so make redoes what an upstream rerun made stale."""
    import importlib
    import re

    from movies2scenes.layout import STAGES

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    for stage in STAGES:
        module = importlib.import_module(f"movies2scenes.stages.{stage.command.replace('-', '_')}"
                                         if stage.folder != "eval" else "movies2scenes.stages.evaluate")
        spec = next(v.spec for v in vars(module).values() if isinstance(getattr(v, "spec", None), object)
                    and getattr(getattr(v, "spec", None), "folder", None) == stage.folder)
        prereqs = re.search(rf"^\$\(RUN\)/{stage.folder}/DONE\.json:(.*)$", makefile, re.M).group(1)
        for need in spec.needs:
            assert f"$(RUN)/{need}/DONE.json" in prereqs, (stage.folder, need)


def test_the_cli_offers_every_stage_of_the_layout():
    from movies2scenes.layout import STAGES
    from movies2scenes.cli import build_parser
    from movies2scenes.pipeline import PIPELINE

    assert STAGES is PIPELINE
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert all(s.command in sub.choices for s in STAGES)
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert all(helps[s.command] == s.help for s in STAGES)


def test_each_stage_is_declared_once_and_its_class_says_what_its_declaration_says():
    """Every StageSpec appears once (pipeline.STAGE_SPECS); each stage class's spec *is* its
    declaration, and the declaration's per_item is the class's kind (a PerItemStage)."""
    import importlib

    from movies2scenes.pipeline import STAGE_SPECS
    from movies2scenes.stages.kit import PerItemStage, Stage

    assert len({(s.command) for s in STAGE_SPECS.values()}) == len(STAGE_SPECS)
    for command, spec in STAGE_SPECS.items():
        module = importlib.import_module(f"movies2scenes.stages.{spec.module}")
        classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Stage)
                   and c.__module__ == module.__name__]
        assert len(classes) == 1 and classes[0].spec is spec, command
        assert spec.per_item == issubclass(classes[0], PerItemStage), command
    specs = [len(re.findall(r"StageSpec\(", p.read_text())) for p in (ROOT / "movies2scenes").rglob("*.py")
             if p.name != "pipeline.py"]
    assert sum(specs) == 0  # no StageSpec is written anywhere else


def test_the_readme_stage_table_lists_the_pipeline_in_order():
    from movies2scenes.pipeline import PIPELINE

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Stages and the run directory")[1].split("\n\n")[1]
    assert re.findall(r"^\| `m2s ([a-z-]+)` \|", table, re.M) == [s.command for s in PIPELINE]


def test_a_non_finite_loss_exits_3_naming_the_command(monkeypatch, capsys):
    from movies2scenes.training import NonFiniteLoss
    from movies2scenes import cli
    from movies2scenes.stages import train_movie_encoder

    def diverge(cfg, force=False):
        raise NonFiniteLoss("loss is nan at step 7; stopping (no checkpoint yet)")

    monkeypatch.setattr(train_movie_encoder, "run", diverge)
    assert cli.main(["train-movie-encoder", "-c", str(ROOT / "configs" / "demo.yaml")]) == 3
    assert "m2s train-movie-encoder: error: loss is nan at step 7" in capsys.readouterr().err


ERRORS = ("ConfigError", "CatalogueError", "NonFiniteLoss", "OutputError", "ExecutorError")


def test_the_exit_taxonomy_lives_in_errors_and_is_imported_from_there():
    """errors.py defines every error of the CLI's exit table; inside the package they are imported
    from errors (their old homes only re-export them for users' code)."""
    from movies2scenes import errors

    assert [e.__name__ for e, _, _ in errors.EXIT_STATUS] == list(ERRORS)
    assert {e.__module__ for e, _, _ in errors.EXIT_STATUS} == {"movies2scenes.errors"}
    old_home = re.compile(r"from \S*(config|catalogue|store|training|executors) import [^\n]*\b(" + "|".join(ERRORS) + r")\b")
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sorted((ROOT / "movies2scenes").rglob("*.py"))
                 for m in old_home.finditer(p.read_text())]
    assert offenders == []


PATH_EDIT = re.compile(r"sys\.path\.(insert|append)")


def test_tests_and_bench_share_only_the_testkit():
    """tests/ and bench/ import the testkit package, never each other, and neither edits sys.path;
    the library never imports the testkit."""
    bench_modules = {p.stem for p in (ROOT / "bench").glob("*.py")}
    test_modules = {p.stem for p in (ROOT / "tests").glob("*.py")}
    offenders = {}
    for path in (ROOT / "tests").glob("*.py"):
        found = {m for m in imported(path) if m.split(".")[0] in bench_modules - test_modules}
        if found or PATH_EDIT.search(path.read_text(encoding="utf-8")):
            offenders[path.name] = sorted(found) or ["sys.path"]
    for path in (ROOT / "bench").glob("*.py"):
        found = {m for m in imported(path) if m.split(".")[0] in test_modules | {"tests"}}
        if found or PATH_EDIT.search(path.read_text(encoding="utf-8")):
            offenders[path.name] = sorted(found) or ["sys.path"]
    assert offenders == {}
    assert not [p for p in PACKAGE.rglob("*.py") if any(m.startswith("testkit") for m in imported(p))]
    assert "testkit.footage" in imported(ROOT / "bench" / "shot_detection.py")  # the check sees imports


def test_the_wheel_holds_one_top_level_package(tmp_path):
    """`pip install .` installs exactly one top-level package, movies2scenes (not stages, apps or
    the testkit beside it)."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("movies2scenes-*.whl"))
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"movies2scenes"}
    assert any(n.startswith("movies2scenes/stages/") for n in zipfile.ZipFile(wheel).namelist())


def test_stage_modules_are_declarations():
    """Each stage module holds only its own work: at most 150 lines, no function in stages/ over
    60 lines, and its StageSpec names the layout's command and folder."""
    import importlib
    import inspect

    from movies2scenes.layout import STAGES as LAYOUT
    from movies2scenes.stages.kit import Stage

    long = {}
    for path in (PACKAGE / "stages").glob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        if path.stem in STAGES and len(lines) > 150:
            long[path.name] = len(lines)
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60:
                long[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}
    specs = {}
    for name in STAGES:
        module = importlib.import_module(f"movies2scenes.stages.{name}")
        classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
                   if issubclass(c, Stage) and c.__module__ == module.__name__]
        assert len(classes) == 1, (name, classes)
        specs[classes[0].spec.command] = classes[0].spec.folder
    assert {s.command: s.folder for s in LAYOUT}.items() <= specs.items()
    assert specs.pop("import-shot-features") == "shot_features"  # the one stage outside the pipeline order


def test_run_dir_names_live_in_the_layout():
    """No library, stage or app module joins a stage folder or DONE.json onto a path itself: the
    layout (RunLayout) and the kit do."""
    from movies2scenes.layout import DONE, FOLDERS

    names = {*FOLDERS, DONE, "world"}

    def joins(source: str) -> list[int]:
        return [node.lineno for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                and isinstance(node.right, ast.Constant) and node.right.value in names]

    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "layout.py" or path.parent.name == "stages" and path.stem in KIT:
            continue
        if found := joins(path.read_text(encoding="utf-8")):
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}
    assert joins('x = run / "shots" / "index.parquet"') == [1]  # the check sees a join
