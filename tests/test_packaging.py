"""Issue 31: what a cluster installs. The library declares ranges, our set-up pins them
(constraints.txt) inside those ranges, the lower-bound set-up (constraints-min.txt) sits on the
ranges' lower ends, and docker/Dockerfile builds from files that exist in this tree."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[canonical(name)] = version
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return reqs


def test_the_library_declares_ranges_not_pins():
    exact = [str(r) for r in requirements(tuple(PROJECT["optional-dependencies"]))
             if any(s.operator in ("==", "===") for s in r.specifier)]
    assert exact == [], f"exact pins belong in constraints.txt, not in the library: {exact}"
    torch = next(r for r in requirements() if r.name == "torch")
    assert torch.specifier.contains("2.9.1") and torch.specifier.contains("2.14.1")


def test_constraints_pin_every_requirement_inside_its_range():
    pinned = pins(ROOT / "constraints.txt")
    for r in requirements(("dev", "transnet", "browse", "ray")):
        assert canonical(r.name) in pinned, f"{r.name} is not pinned in constraints.txt"
        assert r.specifier.contains(pinned[canonical(r.name)], prereleases=True), \
            f"constraints.txt pins {r.name}=={pinned[canonical(r.name)]}, outside pyproject's {r}"


def test_the_lower_bound_environment_is_the_ranges_lower_end():
    low = pins(ROOT / "constraints-min.txt")
    for r in requirements():
        if canonical(r.name) in low:
            lower = [s.version for s in r.specifier if s.operator == ">="]
            assert lower == [low[canonical(r.name)]], f"{r}: constraints-min.txt pins {low[canonical(r.name)]}"
    assert {"torch", "torchvision"} <= set(low)


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "docker" / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_copies_what_exists_and_runs_the_installed_command():
    steps = dockerfile()
    copies = [shlex.split(args) for word, args in steps if word == "COPY"]
    assert copies
    for args in copies:
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"docker/Dockerfile copies {source}, which this tree does not have"
    entry = [a for w, a in steps if w == "ENTRYPOINT"]
    assert entry == ['["m2s"]'] and "m2s" in PROJECT["scripts"]
    installs = " ".join(a for w, a in steps if w == "RUN")
    installed = set()
    for extras in re.findall(r"'\.\[([a-z,]+)\]'", installs):
        assert set(extras.split(",")) <= set(PROJECT["optional-dependencies"]), extras
        installed |= set(extras.split(","))
    # every extra an `m2s` command of the image needs (issue 41: the image could not run `m2s browse`)
    assert {"transnet", "ray", "browse"} <= installed, installed
    assert "-c constraints.txt" in installs and any("constraints.txt" in a[:-1] for a in copies)
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE=") and ("FROM", "${BASE}") in steps
