"""`dermdiff demo --quick` end to end: an interrupted run, a resume that redoes only what is missing, the report.

This is the project's widest integration test: phantom -> diffusion training (EMA, checkpoints) -> sweeps and
lesion transfer -> baseline classifier, one hard-case round, retraining -> FID/KID, fidelity, memorisation ->
report.html. One run is shared by every check here to keep the suite short.
"""

import json
import os

import pytest

from dermdiff.cli import main
from dermdiff.demo import STEP_NAMES, read_marker

REPORT_SECTIONS = ("summary", "data", "diffusion", "sweeps", "transfer", "classifier", "distribution", "fidelity",
                   "memorisation", "steps")



@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Steps 1-2, an interruption inside training (its last checkpoint lost), then `--resume` for the rest."""
    out = str(tmp_path_factory.mktemp("demo") / "run")
    assert main(["demo", "--quick", "--out", out, "--stop-after", "diffusion"]) == 0
    first = {step: read_marker(out, step) for step in STEP_NAMES}
    # a kill after checkpoint 6 of 12: the step's marker and its later checkpoint never got written
    diffusion = os.path.join(out, "diffusion")
    checkpoints = sorted(name for name in os.listdir(diffusion) if name.startswith("checkpoint-"))
    os.remove(os.path.join(out, "markers", "diffusion.json"))
    os.rename(os.path.join(diffusion, "checkpoint-12"), os.path.join(diffusion, "checkpoint-12.tmp"))
    return out, first, checkpoints


def test_stop_after_writes_only_the_first_steps(demo_run):
    _, first, checkpoints = demo_run
    assert first["data"] is not None and first["diffusion"] is not None
    assert all(first[step] is None for step in STEP_NAMES[2:])
    assert checkpoints == ["checkpoint-12", "checkpoint-6"]  # checkpoints_total_limit=2 kept the newest two
    assert first["diffusion"]["outputs"]["steps"] == 12 and first["diffusion"]["outputs"]["resumed_from_step"] is None


def test_without_resume_an_existing_demo_is_refused(demo_run, capsys):
    out, _, _ = demo_run
    assert main(["demo", "--quick", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0]
    assert main(["demo", "--out", out, "--resume"]) == 2  # other settings than the run being resumed
    assert "quick" in capsys.readouterr().err


@pytest.fixture(scope="module")
def resumed(demo_run):
    out, _, _ = demo_run
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["demo", "--quick", "--out", out, "--resume"]) == 0
    return out, buffer.getvalue()


def test_resume_skips_finished_steps_and_continues_training_from_its_checkpoint(demo_run, resumed):
    out, first, _ = demo_run
    _, printed = resumed
    markers = {step: read_marker(out, step) for step in STEP_NAMES}
    assert markers["data"] == first["data"]  # not rerun: identical record, same finish time
    assert "write the imbalanced phantom dataset: done earlier" in printed
    diffusion = markers["diffusion"]["outputs"]
    assert diffusion["resumed_from_step"] == 6 and diffusion["steps"] == 12
    assert markers["diffusion"]["finished_at"] > first["data"]["finished_at"]
    times = [markers[step]["finished_at"] for step in STEP_NAMES[1:]]
    assert times == sorted(times)  # the remaining steps ran, in order, after the resume
    assert os.path.isdir(os.path.join(out, "diffusion", "checkpoint-12"))  # saved again by the resumed run


def test_report_has_every_section_and_picture(resumed):
    out, _ = resumed
    with open(os.path.join(out, "report.html"), encoding="utf-8") as handle:
        html = handle.read()
    for section in REPORT_SECTIONS:
        assert f'<section id="{section}">' in html
    for picture in ("pictures/skin_type_sweep.png", "pictures/size_sweep.png", "pictures/lesion_transfer.png",
                    "hardcase/confusion_before.png", "hardcase/confusion_after.png",
                    "evaluation/figures/nearest_pairs.png", "diffusion/samples/validation-"):
        assert picture in html, picture
    for src in html.split('src="')[1:]:
        assert os.path.isfile(os.path.join(out, src.split('"')[0])), src.split('"')[0]
    assert "FID" in html and "KID" in html and "n/a" not in html.split('id="distribution"')[1].split("</table>")[0]
    # the phantom has skin types: one row per type present in the test split, each with its n
    with open(os.path.join(out, "hardcase", "result.json"), encoding="utf-8") as handle:
        by_type = json.load(handle)["baseline_vs_final_by_skin_type"]
    table = html.split("Per Fitzpatrick skin type, test split")[1].split("</table>")[0]
    assert table.count("<tr") == 1 + len(by_type) > 1
    for skin_type, entry in by_type.items():
        assert f"<td>{skin_type}</td><td>{entry['n']}</td>" in table


def test_summary_is_printed_with_before_and_after(resumed):
    out, printed = resumed
    assert "baseline" in printed and "after hard-case round" in printed
    for metric in ("balanced accuracy", "melanoma sensitivity", "vascular sensitivity", "FID (domain features)"):
        assert metric in printed
    with open(os.path.join(out, "hardcase", "result.json"), encoding="utf-8") as handle:
        result = json.load(handle)
    accuracy = result["baseline_vs_final"]["a"]["overall"]["accuracy"]["value"]
    assert f"{accuracy:.3f}" in printed  # the printed numbers are the measured ones


def test_demo_classifier_backbone_flag_is_checked_before_anything_runs(tmp_path, capsys):
    from dermdiff.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--classifier-backbone", "resnet_18"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown backbone 'resnet_18' (did you mean resnet18" in err
    assert not out.exists()
