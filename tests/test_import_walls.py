"""The walls between layers (issue 27), read from the source's import statements (module level and
inside functions alike): the library never imports the stages or the apps, and a stage imports no
other stage — what stages share lives in the library or in the stage kit (``pipelines/_stage.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "pipelines").glob("*.py") if not p.stem.startswith("_") and p.stem != "cli")


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
            out |= {f"{module}.{a.name}" for a in node.names}  # `from pipelines import evaluate`
    return out


def test_the_library_never_imports_stages_or_apps():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported(p) if m.split(".")[0] == "pipelines")
                 for p in (ROOT / "movies2scenes").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_a_stage_imports_no_other_stage():
    offenders = {}
    for path in [*(ROOT / "pipelines").glob("*.py"), *(ROOT / "pipelines" / "browse").glob("*.py")]:
        if path.stem == "cli":
            continue
        own = f"pipelines.{path.stem}"
        found = sorted(m for m in imported(path) if any(m == f"pipelines.{s}" or m.startswith(f"pipelines.{s}.")
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
    assert "pipelines.demo_world" in imported(ROOT / "pipelines" / "cli.py")
    assert "pipelines._stage" in imported(ROOT / "pipelines" / "export.py")


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


def test_the_cli_offers_every_stage_of_the_layout():
    from movies2scenes.layout import STAGES
    from pipelines.cli import STAGE_COMMANDS, build_parser

    assert list(STAGE_COMMANDS) == [s.command for s in STAGES]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert all(s.command in sub.choices for s in STAGES)


def test_a_non_finite_loss_exits_3_naming_the_command(monkeypatch, capsys):
    from movies2scenes.training import NonFiniteLoss
    from pipelines import cli, train_movie_encoder

    def diverge(cfg, force=False):
        raise NonFiniteLoss("loss is nan at step 7; stopping (no checkpoint yet)")

    monkeypatch.setattr(train_movie_encoder, "run", diverge)
    assert cli.main(["train-movie-encoder", "-c", str(ROOT / "configs" / "demo.yaml")]) == 3
    assert "m2s train-movie-encoder: loss is nan at step 7" in capsys.readouterr().err
