"""`dermdiff generate` for big sets: many maps, sharded over processes, appended metadata, resume after a kill."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest
from test_pipeline_dermdiff import SIZE, tiny_pipeline

from dermdiff.cli import main
from dermdiff.data import load_dataset_dir
from dermdiff.data.append_folder import AppendingImageFolder
from dermdiff.semantic_map import SemanticMap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved tiny pipeline and a folder of 7 maps (conditions, skin types and boxes vary)."""
    root = tmp_path_factory.mktemp("gen")
    tiny_pipeline().save_pretrained(root / "pipe")
    maps = root / "maps"
    maps.mkdir()
    for index in range(7):
        condition = (None, "melanoma", "psoriasis", "nevus")[index % 4]
        boxes = None if condition is None else [(index % 5, 2, 8 + index, 12)]
        SemanticMap.from_annotations(condition, 1 + index % 6, boxes=boxes, size=SIZE, registry="phantom") \
            .to_pil().save(maps / f"map_{index:04d}.png")
    return root


def argv(setup, out, *extra) -> list[str]:
    return ["generate", "--pipeline", str(setup / "pipe"), "--maps", str(setup / "maps"), "--num-images", "9",
            "--batch-size", "2", "--steps", "2", "--seed", "5", "--out", str(out), *extra]


def digest(folder) -> dict[str, str]:
    """Every written file (relative path) -> its SHA-256; the settings file left out."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            if name != "dataset_info.json":
                found[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def reference(setup):
    out = setup / "reference"
    assert main(argv(setup, out)) == 0
    return out, digest(out)


def test_maps_folder_gives_one_image_per_index_with_its_map_and_seed(setup, reference):
    out, files = reference
    assert sorted(name for name in files if name.startswith("images/")) == [f"images/{i:06d}.png" for i in range(9)]
    rows = (out / "metadata.csv").read_text().splitlines()
    assert rows[0] == "file_name,label,skin_type,boxes,mask_file,map_file,seed"
    assert [row.split(",")[0] for row in rows[1:]] == [f"images/{i:06d}.png" for i in range(9)]
    assert rows[1].endswith(",maps/000000.png,5") and rows[9].endswith(",maps/000008.png,13")
    dataset = load_dataset_dir(str(out))
    assert len(dataset) == 9
    # image 8 used map 8 % 7 = 1 (melanoma, type 2)
    assert dataset[8]["label_name"] == "melanoma" and dataset[8]["skin_type"] == 2 and dataset[0]["label"] == -1
    assert not [name for name in files if ".tmp-" in name]


def test_a_killed_run_resumes_without_redoing_finished_images(setup, reference, tmp_path):
    out = tmp_path / "killed"
    original, calls = AppendingImageFolder.add, []

    def dies_after_four(self, files, row):
        if len(calls) == 4:
            raise KeyboardInterrupt  # stands in for the kill: nothing after the 4th image is written
        calls.append(row["file_name"])
        return original(self, files, row)

    with mock.patch.object(AppendingImageFolder, "add", dies_after_four), pytest.raises(KeyboardInterrupt):
        main(argv(setup, out))
    partial = load_dataset_dir(str(out))  # the folder loads at any moment
    assert sorted(partial["image_id"]) == [f"images/{i:06d}" for i in range(4)]
    with open(out / "metadata.csv", "a") as handle:  # a kill inside an append leaves half a line
        handle.write("images/000004.png,mela")
    resumed = []

    def records(self, files, row):
        resumed.append(row["file_name"])
        return original(self, files, row)

    with mock.patch.object(AppendingImageFolder, "add", records):
        assert main(argv(setup, out)) == 0
    assert resumed == [f"images/{i:06d}.png" for i in range(4, 9)]  # nothing finished was redone
    assert digest(out) == reference[1]


def test_other_settings_in_the_folder_are_refused(setup, reference, tmp_path, capsys):
    out = tmp_path / "other"
    assert main(argv(setup, out, "--num-images", "2")) == 0
    capsys.readouterr()
    assert main(argv(setup, out, "--num-images", "2", "--steps", "3")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # (after diffusers' loading bar)
    assert error.startswith("dermdiff generate: error: ") and "with other settings (steps: 2 -> 3)" in error
    assert main(argv(setup, out, "--num-images", "4")) == 0  # more images, same settings: extends the set
    extended = digest(out)
    assert sorted(name for name in extended if name.startswith("images/")) == [f"images/{i:06d}.png" for i in range(4)]
    assert all(reference[1][name] == value for name, value in extended.items() if name != "metadata.csv")


@pytest.mark.parametrize("extra, message", [
    (["--map", "x.png"], "--maps replaces --map/--condition/--skin-type/--box/--mask"),
    (["--num-images", "0"], "--num-images must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_maps_flags_are_one_line(setup, tmp_path, capsys, extra, message):
    assert main(argv(setup, tmp_path / "bad", *extra)) == 2
    assert message in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["generate", "--pipeline", str(setup / "pipe"), "--maps", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "holds no .png map" in capsys.readouterr().err


def launch(setup, out, processes: int) -> subprocess.Popen:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    launcher = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dermdiff.cli", *argv(setup, out)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: the kill reaches every rank


@pytest.mark.slow
def test_two_processes_write_the_same_files_as_one_and_resume_after_sigkill(setup, reference, tmp_path):
    two = tmp_path / "two"
    process = launch(setup, two, 2)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert digest(two) == reference[1]  # no duplicates, no gaps, the same bytes

    killed = tmp_path / "killed"
    process = launch(setup, killed, 2)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "images" / "000002.png").exists():
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # launcher and both ranks, mid-run
    process.wait()
    before = len(load_dataset_dir(str(killed)))  # loadable right after the kill
    assert before < 9
    process = launch(setup, killed, 2)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert digest(killed) == reference[1]
