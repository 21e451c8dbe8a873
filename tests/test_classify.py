"""`dermdiff classify` and `dermdiff.classify`: the same numbers as the Python API, every source, bad input."""

import csv
import json
from unittest import mock

import datasets
import numpy as np
import pytest
import torch

from dermdiff.classifier import SkinClassifier
from dermdiff.classify import align_labels, classify
from dermdiff.cli import main
from dermdiff.data import load_any, write_phantom
from dermdiff.loops.classifier import evaluate_classifier, predict

TINY_HF_RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}
PHANTOM_NAMES = ["nevus", "melanoma", "psoriasis", "dermatofibroma", "vascular"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_phantom(str(tmp_path_factory.mktemp("data") / "phantom"), n=24, size=16, seed=0)


def _classifier(path, label_names=PHANTOM_NAMES, seed=0):
    torch.manual_seed(seed)
    model = SkinClassifier(backbone="transformers", backbone_config=TINY_HF_RESNET, num_labels=len(label_names),
                           label_names=label_names, image_size=16).eval()
    model.save_pretrained(path)
    return model


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_classify_command_gives_the_python_api_numbers(folder, tmp_path, capsys):
    model = _classifier(tmp_path / "clf")
    out = tmp_path / "eval"
    argv = ["classify", "--classifier", str(tmp_path / "clf"), "--data", folder, "--out", str(out),
            "--n-boot", "50", "--quiet"]
    assert main(argv) == 0
    assert "balanced_accuracy" in capsys.readouterr().out
    written = json.loads((out / "metrics.json").read_text())
    expected = evaluate_classifier(model, load_any(folder), n_boot=50, seed=0)
    assert set(written["overall"]) == {"accuracy", "balanced_accuracy", "macro_f1", "macro_auc"}
    assert written["overall"] == expected["overall"] and written["per_class"] == expected["per_class"]
    assert written["confusion_matrix"] == expected["confusion_matrix"] and written["n"] == 24
    # per skin type: every known type of the phantom, each with its own n summing to the whole
    by_type = written["by_skin_type"]
    types = sorted({str(value) for value in load_any(folder)["skin_type"]})
    assert sorted(by_type) == types and sum(entry["n"] for entry in by_type.values()) == 24
    assert "## Per skin type" in (out / "metrics.md").read_text()
    assert (out / "metrics_confusion_matrix.png").stat().st_size > 1000
    rows = _read_csv(out / "predictions.csv")
    probabilities = predict(model, load_any(folder))["probabilities"]
    assert len(rows) == 24 and rows[0]["image_id"] == load_any(folder)["image_id"][0]
    assert np.allclose([[float(row[f"p_{name}"]) for name in PHANTOM_NAMES] for row in rows], probabilities, atol=1e-5)
    assert [row["predicted"] for row in rows] == [PHANTOM_NAMES[k] for k in probabilities.argmax(1)]


def test_predict_only_and_a_saved_dataset_source(folder, tmp_path):
    model = _classifier(tmp_path / "clf")
    load_any(folder).save_to_disk(str(tmp_path / "saved"))
    result = classify(str(tmp_path / "clf"), str(tmp_path / "saved"), str(tmp_path / "p"), predict_only=True,
                      progress=False)
    assert sorted(result["paths"]) == ["predictions"] and not (tmp_path / "p" / "metrics.json").exists()
    rows = _read_csv(tmp_path / "p" / "predictions.csv")
    assert list(rows[0]) == ["image_id"] + [f"p_{name}" for name in PHANTOM_NAMES] + ["predicted"]
    scored = classify(model, str(tmp_path / "saved"), str(tmp_path / "s"), n_boot=20, progress=False)
    direct = classify(model, folder, str(tmp_path / "f"), n_boot=20, progress=False)
    assert scored["metrics"]["overall"] == direct["metrics"]["overall"]


def test_labels_are_matched_by_name(folder, tmp_path):
    """A classifier whose classes are in another order (and include one the data lacks) scores by name."""
    names = list(reversed(PHANTOM_NAMES)) + ["bcc"]
    classify(_classifier(tmp_path / "clf", names), folder, str(tmp_path / "e"), n_boot=10, progress=False)
    rows = _read_csv(tmp_path / "e" / "predictions.csv")
    assert [row["label"] for row in rows] == load_any(folder)["label_name"]
    aligned = align_labels(load_any(folder), names)
    assert aligned.features["label"].names == names
    assert [names[k] for k in aligned["label"]] == load_any(folder)["label_name"]


def test_a_different_label_set_is_one_line(folder, tmp_path, capsys):
    _classifier(tmp_path / "clf", ["nevus", "melanoma", "bcc"])
    argv = ["classify", "--classifier", str(tmp_path / "clf"), "--data", folder, "--out", str(tmp_path / "e")]
    assert main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "label set ['nevus', 'melanoma', 'bcc'] differs from" in line and "'psoriasis'" in line
    assert not (tmp_path / "e" / "predictions.csv").exists()  # refused before predicting


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--loader-kwargs", '{"split": "test"}'], r"loader option\(s\) \['split'\] do not apply to .*imagefolder.*"
                                                   r"its options: \['registry', 'skip_bad', 'with_masks', 'size', "),
        (["--loader-kwargs", "[1]"], "must be a JSON object"),
        (["--n-boot", "-1"], "--n-boot"),
    ],
)
def test_bad_options_are_one_line(folder, tmp_path, capsys, argv, match):
    _classifier(tmp_path / "clf")
    base = ["classify", "--classifier", str(tmp_path / "clf"), "--data", folder, "--out", str(tmp_path / "e")]
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    import re

    assert re.search(match, err), err


def test_hub_dataset_ids_are_loaded_renamed_and_fail_offline_in_one_line(tmp_path):
    from PIL import Image

    table = datasets.Dataset.from_dict({
        "img": [Image.new("RGB", (8, 8), (k * 40, 0, 0)) for k in range(4)],
        "dx": ["mel", "nv", "nv", "mel"],
    })
    with mock.patch("datasets.load_dataset", return_value=table) as load:
        loaded = load_any("someone/skin", split="test", image_column="img", label_column="dx")
    assert load.call_args.args == ("someone/skin",) and load.call_args.kwargs["split"] == "test"
    assert loaded.column_names == ["image", "label"] and loaded.features["label"].names == ["mel", "nv"]
    assert loaded["label"] == [0, 1, 1, 0]
    with pytest.raises(ValueError, match=r"loader option\(s\) \['size'\] do not apply to 'someone/skin' \(hub"):
        load_any("someone/skin", size=64)
    with mock.patch("datasets.load_dataset", side_effect=ConnectionError("offline")):
        with pytest.raises(FileNotFoundError, match=r"Hub dataset 'someone/skin' .*not found: looked for a local "
                                                    r"folder .* and in the datasets cache .*\(offline\)"):
            load_any("someone/skin")
    with mock.patch("datasets.load_dataset", return_value=table):
        match = r"no 'image' column for the images; its columns: \['img', 'dx'\] \(pass image_column"
        with pytest.raises(ValueError, match=match):
            load_any("someone/skin")


def test_a_saved_dataset_dict_needs_its_split(folder, tmp_path):
    whole = load_any(folder)
    parts = datasets.DatasetDict({"train": whole.select(range(16)), "test": whole.select(range(16, 24))})
    parts.save_to_disk(str(tmp_path / "dict"))
    assert load_any(str(tmp_path / "dict"), split="test")["image_id"] == load_any(folder)["image_id"][16:]
    with pytest.raises(ValueError, match=r"holds splits \['train', 'test'\]; pass split= one of them \(got None\)"):
        load_any(str(tmp_path / "dict"))
    match = r"loader option\(s\) \['size'\] do not apply to .*\(saved layout\); its options: \['split', 'limit', "
    with pytest.raises(ValueError, match=match):
        load_any(str(tmp_path / "dict"), size=32)
