"""The bad-input corpus (`tests/bad_input_cases.py`): every case ends clear, with the expected exit status
(or exception type) and one stderr line naming the file, row, field or flag; never a traceback.

Cases run in-process on tiny damaged files built once (`tests/bad_input_fixtures.py`); a few run through
the real entry points (`python -m dermdiff.cli`, `python training/<script>.py`) to show those behave the
same, and `--debug` shows the traceback a user error otherwise hides.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bad_input_cases import CASES, ROOT, classify, describe, run_case
from bad_input_fixtures import build_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return build_workspace(str(tmp_path_factory.mktemp("bad-inputs")))


def test_corpus_is_large_and_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 200


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_clear(case, workspace):
    outcome = run_case(case, workspace)
    assert classify(case, outcome) == "clear", describe(case, outcome)


def _real(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.mark.parametrize(
    "argv, status, word",
    [
        (["-m", "dermdiff.cli", "maps", "inspect", "{truncated}"], 1, "truncated.png"),
        pytest.param(["-m", "dermdiff.cli", "generate", "--pipeline", "{pipes.missing_tensor}", "--out", "{root}/g"],
                     1, "lacks 1 tensor", marks=pytest.mark.slow),
        (["training/train_dermgan.py", "--phantom", "--resolution", "16", "--output_dir", "{root}/d"], 2, "PatchGAN"),
        pytest.param(["training/train_classifier.py", "--train_data_dir", "{npz_truncated}"], 1,
                     "dermamnist_truncated.npz", marks=pytest.mark.slow),
    ],
    ids=["maps", "generate", "train_dermgan", "train_classifier"],
)
def test_real_entry_points_print_one_line(argv, status, word, workspace):
    result = _real([part.format(**vars(workspace)) for part in argv])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status and len(lines) == 1 and word in lines[0], result.stderr[-2000:]


def test_debug_shows_the_traceback(workspace):
    result = _real(["-m", "dermdiff.cli", "maps", "inspect", workspace.truncated, "--debug"])
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
    assert "DataError" in result.stderr and "truncated.png" in result.stderr


def test_internal_errors_keep_their_traceback(monkeypatch, capsys):
    """A bug (here: a KeyError inside a command) is not turned into a user-error line."""
    from dermdiff.cli import main
    from dermdiff.commands import maps

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(maps, "run", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["maps", "inspect", "x.png"])
