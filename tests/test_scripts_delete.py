"""Issue 41, class 8: scripts delete only what they made. `make clean-demo` deletes a run folder
only when it is one (movies2scenes/apps/clean.py), whatever the shell does to its name;
docker/build.sh empties WORK/run and WORK/rootfs only when it made them (its mark is in them).
Both tests fail on the code before the fix: `rm -rf $(RUN)` deleted `RUN`'s first word and a
`run` folder in the repository; build.sh deleted any existing WORK/run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_folder(path: Path) -> Path:
    (path / "shots").mkdir(parents=True)
    (path / "shots" / "DONE.json").write_text("{}")
    (path / "world").mkdir()
    (path / ".lock").write_text("")
    return path


def test_make_clean_demo_deletes_only_the_run_it_names(tmp_path):
    mine = tmp_path / "my"  # the first word of "my run": the old target deleted it
    mine.mkdir()
    (mine / "thesis.txt").write_text("a user's file")
    run = _run_folder(tmp_path / "my run")
    proc = subprocess.run(["make", "-s", "clean-demo", f"RUN={run}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not run.exists() and (mine / "thesis.txt").read_text() == "a user's file"


def test_clean_refuses_what_is_not_a_run(tmp_path, monkeypatch, capsys):
    from movies2scenes.apps.clean import main

    run = _run_folder(tmp_path / "run")
    (run / "notes.md").write_text("mine")
    assert main([str(run)]) == 2
    assert "notes.md" in capsys.readouterr().err and (run / "notes.md").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2 and empty.exists()  # no stage folder: not a run
    link = tmp_path / "link"
    link.symlink_to(_run_folder(tmp_path / "real"))
    assert main([str(link)]) == 2 and (tmp_path / "real" / "shots").is_dir()
    monkeypatch.chdir(_run_folder(tmp_path / "here"))
    assert main(["."]) == 2 and Path("shots").is_dir()  # never the current folder
    assert main([str(tmp_path / "missing")]) == 0  # nothing to delete
    (run / "notes.md").unlink()
    assert main([str(run)]) == 0 and not run.exists()


def _fresh_dir_function() -> str:
    text = (ROOT / "docker" / "build.sh").read_text()
    mark = re.search(r"^MARK=\S+", text, re.M).group(0)
    body = re.search(r"^fresh_dir\(\) \{.*?^\}", text, re.M | re.S).group(0)
    return f"set -euo pipefail\n{mark}\n{body}\n"


def test_docker_build_empties_only_folders_it_made(tmp_path):
    users = tmp_path / "run"
    users.mkdir()
    (users / "data.csv").write_text("keep me")
    script = _fresh_dir_function() + 'fresh_dir "$1"\n'
    proc = subprocess.run(["bash", "-c", script, "fresh", str(users)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not made by this script" in proc.stderr
    assert (users / "data.csv").read_text() == "keep me"
    made = tmp_path / "made"
    assert subprocess.run(["bash", "-c", script, "fresh", str(made)]).returncode == 0
    (made / "old.txt").write_text("from the last build")
    assert subprocess.run(["bash", "-c", script, "fresh", str(made)]).returncode == 0
    assert not (made / "old.txt").exists() and len(list(made.iterdir())) == 1  # emptied, marked again
