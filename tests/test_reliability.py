"""The CI-sized reliability run: every stage is SIGKILLed at a seeded random moment and rerun; its
artefacts must equal an uninterrupted run's byte for byte (bench/reliability.py --tiny)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_stage_survives_a_random_kill(tmp_path):
    r = subprocess.run([sys.executable, "bench/reliability.py", "--tiny", "--seed", "3", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = r.stdout[r.stdout.index("stage "):].splitlines()[1:]
    assert len(table) == 9 and all(" yes" in line for line in table)
