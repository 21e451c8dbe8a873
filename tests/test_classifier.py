"""SkinClassifier backbones, save/load, offline weight requests, the training loop and its script."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dermdiff.classifier import SkinClassifier, WeightsUnavailableError
from dermdiff.loops.classifier import (
    ClassifierTrainingConfig,
    class_weights,
    evaluate_classifier,
    predict,
    train_classifier,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HF_RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}
TINY_VIT = {
    "model_type": "vit",
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "patch_size": 8,
}
FEATURE_SIZES = {
    "resnet18": 512,
    "mobilenet_v3_small": 1024,
    "resnet50": 2048,
    "mobilenet_v3_large": 1280,
    "efficientnet_b0": 1280,
    "densenet121": 1024,
}


def _sample(batch=2, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def _model(**kwargs):
    torch.manual_seed(0)
    return SkinClassifier(**kwargs).eval()


@pytest.mark.parametrize(
    "backbone",
    [
        "resnet18",
        "mobilenet_v3_small",
        pytest.param("resnet50", marks=pytest.mark.slow),
        pytest.param("mobilenet_v3_large", marks=pytest.mark.slow),
        pytest.param("efficientnet_b0", marks=pytest.mark.slow),
        pytest.param("densenet121", marks=pytest.mark.slow),
    ],
)
def test_torchvision_backbones(backbone):
    model = _model(backbone=backbone, num_labels=3, image_size=32)
    sample = _sample()
    logits = model(sample).logits
    assert logits.shape == (2, 3)
    assert model(sample, return_dict=False)[0].shape == (2, 3)
    assert model.features(sample).shape == (2, FEATURE_SIZES[backbone])
    probabilities = model.predict_proba(sample)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2))
    assert torch.allclose(probabilities, torch.softmax(logits, dim=1), atol=1e-6)
    assert model.label_names == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize("backbone_config", [TINY_HF_RESNET, TINY_VIT])
def test_transformers_backbone(backbone_config):
    model = _model(
        backbone="transformers", num_labels=4, label_names=list("abcd"), image_size=16, backbone_config=backbone_config
    )
    sample = _sample(size=16)
    assert model(sample).logits.shape == (2, 4)
    assert model.features(sample).shape == (2, 16)
    assert model.model.config.id2label[2] == "c"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(backbone="mobilenet_v3_small", num_labels=2, label_names=["nevus", "melanoma"], image_size=32),
        dict(backbone="transformers", num_labels=3, image_size=16, backbone_config=TINY_VIT),
    ],
)
def test_save_load_round_trip(tmp_path, kwargs):
    model = _model(**kwargs)
    size = kwargs["image_size"]
    model.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "diffusion_pytorch_model.safetensors")
    loaded = SkinClassifier.from_pretrained(tmp_path).eval()
    sample = _sample(size=size, seed=1)
    assert torch.equal(model(sample).logits, loaded(sample).logits)
    assert loaded.config.label_names == model.config.label_names


def test_local_torchvision_weights(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = torchvision.models.mobilenet_v3_small()
    save_file(reference.state_dict(), str(tmp_path / "mobilenet.safetensors"))
    torch.save(reference.state_dict(), str(tmp_path / "mobilenet.pth"))
    for name in ("mobilenet.safetensors", "mobilenet.pth"):
        model = SkinClassifier(backbone="mobilenet_v3_small", num_labels=2, pretrained=str(tmp_path / name))
        assert torch.equal(model.model.features[0][0].weight, reference.features[0][0].weight)
        assert model.model.classifier[3].out_features == 2
    # the saved model rebuilds without the original weights file
    model.save_pretrained(tmp_path / "saved")
    os.remove(tmp_path / "mobilenet.pth")
    loaded = SkinClassifier.from_pretrained(tmp_path / "saved")
    assert torch.equal(loaded.model.features[0][0].weight, reference.features[0][0].weight)
    with pytest.raises(ValueError, match="do not fit torchvision resnet18"):
        SkinClassifier(backbone="resnet18", num_labels=2, pretrained=str(tmp_path / "mobilenet.safetensors"))


def test_any_torchvision_model_with_weights_from_the_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision
    from safetensors.torch import save_file

    monkeypatch.setenv("DERMDIFF_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    torch.manual_seed(3)
    reference = torchvision.models.shufflenet_v2_x0_5()  # not one of TORCHVISION_BACKBONES
    cache = tmp_path / "torch_hub" / "checkpoints"
    cache.mkdir(parents=True)
    url = torchvision.models.ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1.url
    torch.save(reference.state_dict(), str(cache / os.path.basename(url)))
    model = SkinClassifier(backbone="shufflenet_v2_x0_5", num_labels=3, pretrained="IMAGENET1K_V1", image_size=32)
    assert torch.equal(model.model.conv1[0].weight, reference.conv1[0].weight)
    assert model(_sample(size=32)).logits.shape == (2, 3) and model.features(_sample(size=32)).shape == (2, 1024)
    # weights of another width: same keys, other shapes -> one line, not a RuntimeError
    save_file(torchvision.models.shufflenet_v2_x1_0().state_dict(), str(tmp_path / "wider.safetensors"))
    with pytest.raises(ValueError, match=r"do not fit torchvision shufflenet_v2_x0_5: size mismatch") as error:
        SkinClassifier(backbone="shufflenet_v2_x0_5", num_labels=3, pretrained=str(tmp_path / "wider.safetensors"))
    assert "\n" not in str(error.value)


def test_transformers_folder_as_backbone_and_weights_that_do_not_fit(tmp_path):
    from transformers import AutoConfig, AutoModelForImageClassification, BertConfig, BertModel

    torch.manual_seed(4)
    tiny = AutoModelForImageClassification.from_config(AutoConfig.for_model(**TINY_HF_RESNET))
    tiny.save_pretrained(tmp_path / "hf")
    model = SkinClassifier(backbone=str(tmp_path / "hf"), num_labels=2, image_size=16)
    assert model.config.backbone == "transformers" and model.config.pretrained == str(tmp_path / "hf")
    assert model(_sample(size=16)).logits.shape == (2, 2)
    # the same weights under a config with other layer sizes
    with open(tmp_path / "hf" / "config.json") as handle:
        config = json.load(handle)
    config["hidden_sizes"] = [8, 24]
    with open(tmp_path / "hf" / "config.json", "w") as handle:
        json.dump(config, handle)
    with pytest.raises(ValueError, match=r"do not fit its config \(ResNetForImageClassification\)"):
        SkinClassifier(backbone=str(tmp_path / "hf"), num_labels=2, image_size=16)
    tiny_bert = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=8)
    BertModel(tiny_bert).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="is not a transformers image classifier"):
        SkinClassifier(backbone=str(tmp_path / "bert"), num_labels=2)
    with pytest.raises(ValueError, match="names its own weights"):
        SkinClassifier(backbone=str(tmp_path / "bert"), num_labels=2, pretrained="imagenet")


def test_local_transformers_checkpoint(tmp_path):
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.for_model(**TINY_HF_RESNET, num_labels=5)
    torch.manual_seed(2)
    AutoModelForImageClassification.from_config(config).save_pretrained(tmp_path / "hf")
    model = SkinClassifier(
        backbone="transformers", num_labels=2, label_names=["x", "y"], pretrained=str(tmp_path / "hf")
    )
    assert model.config.backbone_config["model_type"] == "resnet"
    assert model.model.config.num_labels == 2
    model.save_pretrained(tmp_path / "saved")
    loaded = SkinClassifier.from_pretrained(tmp_path / "saved").eval()  # no access to tmp_path / "hf" needed
    sample = _sample(size=16)
    assert torch.equal(model.eval()(sample).logits, loaded(sample).logits)


def test_download_requests_fail_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    looked = os.path.join(str(tmp_path / "torch_hub"), "checkpoints", "resnet18-f37072fd.pth")
    with pytest.raises(WeightsUnavailableError, match=rf"looked for {looked}.*offline mode") as error:
        SkinClassifier(backbone="resnet18", num_labels=2, pretrained="imagenet")
    assert "\n" not in str(error.value)
    with pytest.raises(WeightsUnavailableError, match=r"looked for a folder .*some-vit and in the Hugging Face cache"):
        SkinClassifier(backbone="transformers", num_labels=2, pretrained="someone/some-vit")
    with pytest.raises(WeightsUnavailableError, match=r"offline mode"):  # a Hub id given as the backbone
        SkinClassifier(backbone="someone/some-vit", num_labels=2)
    with pytest.raises(FileNotFoundError, match=r"not a file nor a weights name.*IMAGENET1K_V1"):
        SkinClassifier(backbone="resnet18", num_labels=2, pretrained="imagenet22k")
    with pytest.raises(FileNotFoundError, match="not a file"):
        SkinClassifier(backbone="resnet18", num_labels=2, pretrained=str(tmp_path / "missing.pth"))


def test_download_without_connection_fails_fast(tmp_path, monkeypatch):
    import dermdiff.classifier as classifier_module

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DERMDIFF_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    calls = []

    def unreachable(address, timeout=None):
        calls.append((address, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(classifier_module.socket, "create_connection", unreachable)
    with pytest.raises(WeightsUnavailableError, match="no network connection to download.pytorch.org"):
        SkinClassifier(backbone="mobilenet_v3_small", num_labels=2, pretrained="imagenet")
    assert calls and calls[0][1] <= 5  # a short timeout, never a hang


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backbone="resnet_18"), r"unknown backbone .*did you mean resnet18.*list_models"),
        (dict(num_labels=1), "num_labels"),
        (dict(num_labels=3, label_names=["a", "b"]), "label_names"),
        (dict(backbone="resnet18", backbone_config=TINY_VIT), "backbone_config"),
        (dict(backbone="transformers"), "backbone_config"),
        (dict(backbone="transformers", backbone_config={"hidden_size": 8}), "model_type"),
        (dict(image_size=4), "image_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SkinClassifier(**kwargs)


# ----------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------


def _colour_dataset(n, seed, size=16):
    """Class k = channel k bright: learnable in a couple of epochs by a tiny network."""
    import datasets

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in range(n):
        label = index % 3
        pixels = rng.integers(0, 60, size=(size, size, 3))
        pixels[..., label] += 150
        images.append(Image.fromarray(pixels.astype(np.uint8)))
        labels.append(label)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["red", "green", "blue"])}
    )
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def _tiny_config(**overrides):
    settings = dict(
        backbone="transformers",
        backbone_config=TINY_HF_RESNET,
        resolution=16,
        num_epochs=2,
        batch_size=8,
        eval_batch_size=16,
        learning_rate=1e-2,
        balance="sampler",
        seed=0,
    )
    settings.update(overrides)
    return ClassifierTrainingConfig(**settings)


def test_train_writes_outputs_and_resumes(tmp_path):
    train, val = _colour_dataset(24, seed=0), _colour_dataset(12, seed=1)
    output_dir = str(tmp_path / "run")
    model, history = train_classifier(train, val, _tiny_config(), output_dir=output_dir)
    assert [record["epoch"] for record in history["epochs"]] == [0, 1]
    assert history["global_step"] == 6  # 24 images / batch 8
    assert model.config.label_names == ["red", "green", "blue"]
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "history.json"):
        assert os.path.isfile(os.path.join(output_dir, name))
    checkpoints = sorted(name for name in os.listdir(output_dir) if name.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]
    assert os.path.isdir(os.path.join(output_dir, "checkpoint-6", "classifier"))
    best = history["best_epoch"]
    assert history["best_val_balanced_accuracy"] == history["epochs"][best]["val_balanced_accuracy"]
    saved = SkinClassifier.from_pretrained(output_dir)
    for key, value in saved.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key

    # resume for one more epoch, switching to the class-weighted loss
    resumed_model, resumed = train_classifier(
        train, val, _tiny_config(num_epochs=3, balance="loss", resume_from_checkpoint="latest"), output_dir=output_dir
    )
    assert [record["epoch"] for record in resumed["epochs"]] == [0, 1, 2]
    assert resumed["epochs"][:2] == history["epochs"]  # restored, not re-run
    assert resumed["global_step"] == 9
    assert not any(name.endswith(".tmp") for name in os.listdir(output_dir))
    scores = [record["val_balanced_accuracy"] for record in resumed["epochs"]]
    assert resumed["best_val_balanced_accuracy"] == max(scores) == scores[resumed["best_epoch"]]

    metrics = evaluate_classifier(resumed_model, val, n_boot=50)
    assert metrics["label_names"] == ["red", "green", "blue"] and metrics["n"] == 12
    assert metrics["overall"]["balanced_accuracy"]["value"] == pytest.approx(resumed["best_val_balanced_accuracy"])


def test_history_is_written_after_every_epoch_and_scores_are_printed(tmp_path, capsys):
    train, val = _colour_dataset(16, seed=0), _colour_dataset(6, seed=1)
    output_dir = tmp_path / "run"
    seen_on_disk = []

    def after_epoch(record):
        with open(output_dir / "history.json") as handle:
            on_disk = json.load(handle)
        seen_on_disk.append(([entry["epoch"] for entry in on_disk["epochs"]], on_disk["best_epoch"]))
        assert on_disk["epochs"][-1] == json.loads(json.dumps(record))
        assert not (output_dir / "config.json").exists()  # the run is not over yet

    _, history = train_classifier(
        train, val, _tiny_config(num_epochs=2, checkpoints_total_limit=1), output_dir=str(output_dir),
        epoch_callback=after_epoch,
    )
    assert [epochs for epochs, _ in seen_on_disk] == [[0], [0, 1]]
    assert seen_on_disk[0][1] == 0 and not (output_dir / "history.json.tmp").exists()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(printed) == 2 and "val_balanced_accuracy" in printed[0] and "train_loss" in printed[0]
    assert f"val_accuracy {history['epochs'][1]['val_accuracy']:.3f}" in printed[1]


def test_early_stopping_rule():
    from dermdiff.loops.classifier import _EarlyStopping

    model = torch.nn.Linear(2, 2)
    stopping = _EarlyStopping(patience=2)
    improved = [stopping.update(score, epoch, model) for epoch, score in enumerate([0.5, 0.6, 0.55, 0.6])]
    assert improved == [True, True, False, False]  # ties do not count as improvement
    assert stopping.stopped and stopping.best_epoch == 1 and stopping.best_score == 0.6


def test_early_stopping_waits_for_min_epochs():
    """Patience runs out at epoch 3, but the run must train 6 epochs first; after that the same rule holds."""
    from dermdiff.loops.classifier import _EarlyStopping

    model = torch.nn.Linear(2, 2)
    stopping = _EarlyStopping(patience=2, min_epochs=6)
    scores = [0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    stopped = []
    for epoch, score in enumerate(scores):
        stopping.update(score, epoch, model)
        stopped.append(stopping.stopped)
    assert stopped == [False] * 5 + [True, True] and stopping.best_epoch == 0


def test_training_runs_min_epochs_before_stopping_early(tmp_path, monkeypatch):
    """A validation score that never improves: patience 1 stops after epoch 1, unless the run must train 3 epochs
    first (then it stops right after epoch 2, still short of num_epochs)."""
    import dermdiff.loops.classifier as loop

    monkeypatch.setattr(loop, "_validation_scores", lambda *args: {"val_balanced_accuracy": 0.5})
    train, val = _colour_dataset(16, seed=0), _colour_dataset(8, seed=1)
    epochs = {}
    for min_epochs in (0, 3):
        config = _tiny_config(num_epochs=5, patience=1, min_epochs=min_epochs)
        _, history = train_classifier(train, val, config, output_dir=str(tmp_path / f"min{min_epochs}"))
        assert history["stopped_early"] and history["best_epoch"] == 0
        epochs[min_epochs] = [record["epoch"] for record in history["epochs"]]
    assert epochs == {0: [0, 1], 3: [0, 1, 2]}


def test_min_epochs_checked_against_num_epochs():
    assert ClassifierTrainingConfig(num_epochs=4, min_epochs=4).min_epochs == 4
    with pytest.raises(ValueError, match=r"^min_epochs must be between 0 and num_epochs \(4\), got 5$"):
        ClassifierTrainingConfig(num_epochs=4, min_epochs=5)


def test_torch_dataset_input_and_predict():
    from torch.utils.data import TensorDataset

    images = torch.rand(10, 3, 16, 16) * 2 - 1
    labels = torch.arange(10) % 2
    model = _model(backbone="transformers", num_labels=2, image_size=16, backbone_config=TINY_HF_RESNET)
    output = predict(model, TensorDataset(images, labels), batch_size=4)
    assert output["probabilities"].shape == (10, 2) and output["labels"].tolist() == labels.tolist()
    with torch.no_grad():
        direct = model.predict_proba(images).numpy()
    assert np.allclose(output["probabilities"], direct, atol=1e-6)


def test_classifier_resize_is_the_stretch_on_tensors():
    """Classifier inputs are stretched like every model's (no crop) with torchvision's antialiased bilinear
    resize, as the loop always did: a PIL image, its uint8 tensor and its [-1, 1] tensor give one result."""
    from torchvision.transforms import v2

    from dermdiff.data.transforms import pixel_values, resize_pixels
    from dermdiff.loops.classifier import image_transform

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)  # 40 wide, 30 high
    unit = v2.functional.to_dtype(v2.functional.to_image(array), torch.float32, scale=True)
    expected = v2.Resize((16, 16), antialias=True)(unit).clamp(0, 1) * 2 - 1
    transform = image_transform(16, augment=False)
    for image in (Image.fromarray(array), torch.from_numpy(array).permute(2, 0, 1), unit * 2 - 1):
        assert torch.allclose(transform(image), expected, atol=1e-6)
    assert torch.equal(transform(Image.fromarray(array)), expected)
    assert torch.equal(resize_pixels(unit[None], 16)[0], v2.Resize((16, 16), antialias=True)(unit))
    assert resize_pixels(unit, (30, 40)) is unit  # already the size: untouched
    # the generative models' filter (PIL bicubic) differs on purpose (see resize_pixels' docstring)
    assert (pixel_values(Image.fromarray(array), 16) - expected).abs().max() > 0.01


def test_class_weights_and_config_checks():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    with pytest.raises(ValueError, match="balance"):
        ClassifierTrainingConfig(balance="oversample")
    with pytest.raises(ValueError, match="unknown training setting"):
        train_classifier([(torch.zeros(3, 8, 8), 0)], config=_tiny_config(), output_dir="unused", epochs=3)


def test_config_reads_the_command_line_spellings_and_checks_the_scheduler():
    """0 patience, 'none' balance and 'none' tracker mean off, as the flags always did; a bad scheduler names it."""
    config = ClassifierTrainingConfig(patience=0, balance="none", report_to="none")
    assert (config.patience, config.balance, config.report_to) == (None, None, None)
    with pytest.raises(ValueError, match=r"^patience must be >= 0 \(0 or None: never stop early\), got -1$"):
        ClassifierTrainingConfig(patience=-1)
    with pytest.raises(ValueError, match=r"^lr_scheduler 'bogus' is not one of \['linear', 'cosine'"):
        ClassifierTrainingConfig(lr_scheduler="bogus")


def test_script_flags_are_the_config_fields(capsys):
    """train_classifier.py's flags are generated from ClassifierTrainingConfig: defaults from the fields, the
    command-line names kept (--train_batch_size, --no_augment), a bad value one line naming the flag."""
    import dataclasses
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_classifier_flags", os.path.join("training",
                                                                                      "train_classifier.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = script.parse_args(["--train_data_dir", "x"])
    assert dataclasses.asdict(args.config) == dataclasses.asdict(ClassifierTrainingConfig())
    args = script.parse_args(["--train_data_dir", "x", "--no_augment", "--train_batch_size", "5", "--patience", "0"])
    assert (args.config.augment, args.config.batch_size, args.config.patience) == (False, 5, None)
    for flag, value, message in (("--patience", "-1", "--patience must be >= 0"),
                                 ("--train_batch_size", "0", "--train_batch_size must be >= 1, got 0"),
                                 ("--n_boot", "-1", "--n_boot must be >= 0, got -1"),
                                 ("--min_epochs", "11", "--min_epochs must be between 0 and --num_epochs (10), got 11"),
                                 ("--balance", "over", "argument --balance: invalid choice: 'over'")):
        with pytest.raises(SystemExit) as stop:
            script.parse_args(["--train_data_dir", "x", flag, value])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and "Traceback" not in err, err


def test_script_smoke(tmp_path, monkeypatch, capsys):
    from dermdiff.data import write_phantom

    monkeypatch.syspath_prepend(os.path.join(ROOT, "training"))
    import train_classifier as script

    data = write_phantom(str(tmp_path / "phantom"), n=30, size=16, seed=0)
    output_dir = str(tmp_path / "out")
    argv = [
        "--train_data_dir", data, "--backbone", "transformers", "--backbone_config", json.dumps(TINY_HF_RESNET),
        "--resolution", "16", "--num_epochs", "1", "--train_batch_size", "8", "--n_boot", "20",
        "--split_fractions", '{"train": 0.6, "validation": 0.2, "test": 0.2}', "--output_dir", output_dir,
    ]  # fmt: skip
    results = script.main(script.parse_args(argv))
    for name in ("config.json", "metrics.json", "metrics.md", "metrics_confusion_matrix.png", "history.json", "splits.md"):
        assert os.path.isfile(os.path.join(output_dir, name)), name
    assert set(results["sizes"]) == {"train", "validation", "test"}
    with open(os.path.join(output_dir, "metrics.json")) as handle:
        assert json.load(handle)["n"] == results["sizes"]["validation"]

    script.main(script.parse_args(argv + ["--num_epochs", "2", "--resume_from_checkpoint", "latest"]))
    with open(os.path.join(output_dir, "history.json")) as handle:
        assert [record["epoch"] for record in json.load(handle)["epochs"]] == [0, 1]
    with pytest.raises(SystemExit):
        script.parse_args(["--train_data_dir", data, "--backbone_config", "vit"])
    assert "--backbone_config needs --backbone transformers" in capsys.readouterr().err
    sys.modules.pop("train_classifier", None)


def test_script_external_test_loader_options_and_push(tmp_path, monkeypatch, capsys):
    """--test_data_dir is scored beside the internal test split; options per source; the card carries both."""
    from unittest import mock

    from dermdiff.data import write_phantom

    monkeypatch.syspath_prepend(os.path.join(ROOT, "training"))
    import train_classifier as script

    data = write_phantom(str(tmp_path / "phantom"), n=30, size=16, seed=0)
    external = write_phantom(str(tmp_path / "external"), n=20, size=16, seed=1)
    output_dir = tmp_path / "out"
    argv = [
        "--train_data_dir", data, "--backbone", "transformers", "--backbone_config", json.dumps(TINY_HF_RESNET),
        "--resolution", "16", "--num_epochs", "1", "--train_batch_size", "8", "--n_boot", "20",
        "--split_fractions", '{"train": 0.6, "validation": 0.2, "test": 0.2}', "--output_dir", str(output_dir),
        "--test_data_dir", external, "--test_loader_kwargs", '{"limit": 12}',
    ]  # fmt: skip

    # bad input first: each fails in one line before any training
    with pytest.raises(ValueError, match=r"loader option\(s\) \['split'\] do not apply to .*external.* its options: "):
        script.main(script.parse_args(argv + ["--test_loader_kwargs", '{"split": "test"}']))
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    for index, label in enumerate(["bcc", "akiec"]):
        Image.new("RGB", (16, 16), (index * 90, 20, 20)).save(other / "images" / f"{index}.png")
    (other / "metadata.csv").write_text("file_name,label\nimages/0.png,bcc\nimages/1.png,akiec\n")
    match = r"label set \['nevus', .*\] differs from --test_data_dir .*other's \['akiec', 'bcc'\]"
    with pytest.raises(ValueError, match=match):
        script.main(script.parse_args(argv + ["--test_data_dir", str(other)]))
    assert not (output_dir / "config.json").exists()
    bad_flags = (
        (["--backbone", "resnet_18"], "did you mean resnet18"),
        (["--test_loader_kwargs", "[]"], "JSON object"),
    )
    for bad, match in bad_flags:
        with pytest.raises(SystemExit):
            script.parse_args(argv + bad)
        assert match in capsys.readouterr().err

    calls = {}
    token = "hf_SECRETclassifier123"
    with mock.patch("dermdiff.hub.create_repo", lambda repo_id, **kw: mock.Mock(repo_id=repo_id)), \
            mock.patch("dermdiff.hub.upload_folder", lambda **kw: calls.update(kw)):
        results = script.main(script.parse_args(argv + ["--push_to_hub", "--hub_model_id", "someone/clf",
                                                          "--hub_token", token]))
    assert results["sizes"]["external_test"] == 12 and results["sizes"]["test"] > 0
    assert results["external_test"]["n"] == 12 and results["test"]["n"] == results["sizes"]["test"]  # both kept
    for stem in ("metrics", "metrics_test", "metrics_external_test"):
        assert (output_dir / f"{stem}.json").is_file() and (output_dir / f"{stem}_confusion_matrix.png").is_file()
    class_counts = json.loads((output_dir / "class_counts.json").read_text())
    assert sorted(class_counts) == ["external_test", "test", "train", "validation"]
    assert sum(class_counts["external_test"]["labels"].values()) == 12 == class_counts["external_test"]["n"]
    assert calls["folder_path"] == str(output_dir) and calls["token"] == token
    card = (output_dir / "README.md").read_text()
    facts = ("SkinClassifier (transformers)", "## Internal test split", f"## External test set: {external}",
             "## Split composition", "| external_test | 12 |", "Largest difference between two splits' shares",
             "test balanced_accuracy", "Not a diagnostic device")
    for fact in facts:
        assert fact in card, fact
    assert "Generated images are not patients" not in card and "generated less faithfully" not in card
    assert "recognised less reliably" in card and token not in card
    sys.modules.pop("train_classifier", None)

