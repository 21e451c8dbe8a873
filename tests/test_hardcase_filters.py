"""The hard-case loop's optional filters (`filter_by_distance`, `filter_by_reference`) and `fine_tune`.

The filters are fed images whose distances / reference probabilities the test controls (solid colours,
exact and near copies, stub models); the loop runs on the tiny phantom and generators of
`test_hardcase.py`, with training spied on (or replaced by an untrained tiny classifier where the test
is about what the loop passes around, not about what training learns).
"""

import copy
import csv
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from test_hardcase import SIZE, TINY_CLASSIFIER, phantom_case, read_text, splits, tiny_gan  # noqa: F401
from torch import nn

import dermdiff.hardcase.loop as hardcase
from dermdiff.classifier import SkinClassifier
from dermdiff.hardcase import HardCaseConfig, image_hash, run_hardcase_loop
from dermdiff.hardcase.filters import filter_by_distance, filter_by_reference
from dermdiff.hardcase.mining import Ledger
from dermdiff.hardcase.synthesis import SyntheticImage

# -- helpers --------------------------------------------------------------------------------------------------------


def solid(rgb, size=SIZE) -> Image.Image:
    return Image.new("RGB", (size, size), tuple(rgb))


def item(image: Image.Image, source_id: str, label: int = 0) -> SyntheticImage:
    smap = phantom_case().semantic_map
    return SyntheticImage(
        image=image,
        label=label,
        label_name=smap.registry.names[label],
        semantic_map=smap,
        source_id=source_id,
        strategy="map",
        seed=len(source_id),
    )


def brute_force_nearest_mse(images, training) -> np.ndarray:
    """min over training of the mean squared error, pixels in [0, 1], in float64."""
    g = np.stack([np.asarray(x.image, dtype=np.float64) / 255 for x in images]).reshape(len(images), -1)
    t = np.stack([np.asarray(x, dtype=np.float64) / 255 for x in training]).reshape(len(training), -1)
    return ((g[:, None, :] - t[None, :, :]) ** 2).mean(axis=2).min(axis=1)


class PixelFeatures(nn.Module):
    """Feature model whose embedding is the colour of the top-left pixel (in [-1, 1]): distances known exactly."""

    config = SimpleNamespace(image_size=SIZE)

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def features(self, sample):
        self.calls += 1
        return sample[:, :, 0, 0]


class RedReference(nn.Module):
    """Reference classifier whose p(class 1) is the red level of the top-left pixel (0..1); 2 classes."""

    config = SimpleNamespace(image_size=SIZE)

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def predict_proba(self, sample):
        red = ((sample[:, 0, 0, 0] + 1) / 2).double()
        return torch.stack([1 - red, red], dim=1)


class TableReference(nn.Module):
    """Reference classifier that returns a fixed probability row per image, chosen by the image's red level."""

    config = SimpleNamespace(image_size=SIZE)

    def __init__(self, rows: dict):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.rows = rows  # red level 0..255 -> probability row
        self.batches = []

    def predict_proba(self, sample):
        self.batches.append(len(sample))
        reds = ((sample[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
        return torch.tensor([self.rows[red] for red in reds], dtype=torch.float64)


def state(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def spy_training(monkeypatch, train=True, pixel_features=None):
    """Records every `train_classifier` call of the loop: the start model passed (and its weights at the call)
    and the model returned. `train=False` replaces training by an untrained tiny classifier (seeded by the
    call's seed) or, when a start model is passed, that model with its weights nudged, as training would.

    `pixel_features` (a list): every new model's `features` become its flattened pixels (the models of
    `test_hardcase.py` are too little trained for their features to tell images apart), and each call
    appends the model that embedded to the list."""
    calls = []
    real = hardcase.train_classifier

    def spy(pool, validation, config, output_dir="out", model=None, label_names=None):
        calls.append({"model": model, "state": None if model is None else state(model), "pool": len(pool)})
        if train:
            trained, history = real(
                pool, validation, config, output_dir=output_dir, model=model, label_names=label_names
            )
        else:
            if model is None:
                torch.manual_seed(config["seed"])
                model = SkinClassifier(
                    backbone=config["backbone"],
                    num_labels=len(label_names),
                    label_names=label_names,
                    image_size=config["resolution"],
                )
                if pixel_features is not None:
                    model.features = lambda sample, model=model: pixel_features.append(model) or sample.flatten(1)
            with torch.no_grad():
                next(model.parameters()).add_(0.01)  # in place, like training a passed model
            trained, history = model, {}
        calls[-1]["returned"] = trained
        calls[-1]["returned_state"] = state(trained)
        return trained, history

    monkeypatch.setattr(hardcase, "train_classifier", spy)
    return calls


def loop_config(**overrides) -> HardCaseConfig:
    settings = {
        "rounds": 1,
        "max_cases": 2,
        "strategies": ("map",),
        "per_case": 2,
        "n_boot": 20,
        "seed": 1,
        "classifier": TINY_CLASSIFIER,
    }
    settings.update(overrides)
    return HardCaseConfig(**settings)


# -- filter_by_distance ---------------------------------------------------------------------------------------------


def test_distance_filter_drops_exactly_the_exact_and_near_copies(splits):
    training = list(splits["train"]["image"][:3])
    near = np.asarray(training[0]).copy()
    near[5, 7, 1] = near[5, 7, 1] + 1 if near[5, 7, 1] < 255 else 254  # one channel of one pixel, one level
    images = [
        item(training[1].copy(), "copy-of-1"),
        item(splits["train"][10]["image"].copy(), "other-10"),
        item(Image.fromarray(near), "near-copy-of-0"),
        item(solid((20, 200, 60)), "green"),
    ]
    kept, dropped = filter_by_distance(images, training, min_mse=1e-4, size=SIZE)

    assert [x.source_id for x in dropped] == ["copy-of-1", "near-copy-of-0"]
    assert [x.source_id for x in kept] == ["other-10", "green"]  # input order kept
    expected = brute_force_nearest_mse(images, training)
    recorded = np.array([x.extra["nearest_mse"] for x in images])  # recorded on every image, kept or not
    np.testing.assert_allclose(recorded, expected, atol=1e-6)
    assert recorded[0] == pytest.approx(0.0, abs=1e-6) and recorded[2] < 1e-6
    assert min(recorded[1], recorded[3]) > 1e-3  # the others are far, so the threshold is not what decides
    assert "nearest_feature_distance" not in images[0].extra  # no feature filter asked for


def test_distance_filter_mse_threshold_is_strict_at_the_boundary():
    training = [solid((100, 100, 100)), solid((0, 0, 0))]
    generated = [item(solid((160, 100, 100)), "sixty-levels-red")]
    distance = (60 / 255) ** 2 / 3  # the only differing channel, averaged over three

    kept, dropped = filter_by_distance(generated, training, min_mse=distance * (1 + 1e-4), size=SIZE)
    assert not kept and [x.source_id for x in dropped] == ["sixty-levels-red"]
    assert generated[0].extra["nearest_mse"] == pytest.approx(distance, rel=1e-5)
    kept, dropped = filter_by_distance(generated, training, min_mse=distance * (1 - 1e-4), size=SIZE)
    assert [x.source_id for x in kept] == ["sixty-levels-red"] and not dropped


def test_distance_filter_compares_at_size_whatever_the_training_images_size(splits):
    big = [image.resize((2 * SIZE, 2 * SIZE), Image.BICUBIC) for image in splits["train"]["image"][:2]]
    generated = [
        item(big[1].resize((SIZE, SIZE), Image.BICUBIC), "copy-at-generator-size"),
        item(solid((0, 0, 255)), "blue"),
    ]
    kept, dropped = filter_by_distance(generated, big, min_mse=1e-4, size=SIZE)
    assert [x.source_id for x in dropped] == ["copy-at-generator-size"] and [x.source_id for x in kept] == ["blue"]


def test_feature_distance_filter_uses_the_feature_model_and_a_strict_threshold():
    training = [solid((100, 100, 100)), solid((200, 50, 0))]
    top_left_only = np.full((SIZE, SIZE, 3), 255, dtype=np.uint8)
    top_left_only[0, 0] = (200, 50, 0)  # same features as training[1], pixels far from every training image
    generated = [
        item(Image.fromarray(top_left_only), "same-features"),
        item(solid((100, 100, 140)), "forty-levels-blue"),
        item(solid((0, 255, 0)), "green"),
    ]
    features = PixelFeatures()
    step = 40 / 127.5  # forty levels, in the [-1, 1] units the features are in

    by_features = {"feature_model": features, "size": SIZE}
    kept, dropped = filter_by_distance(generated, training, min_feature_distance=step * 1.01, **by_features)
    assert features.calls >= 2  # generated and training were embedded
    assert [x.source_id for x in dropped] == ["same-features", "forty-levels-blue"]
    assert [x.source_id for x in kept] == ["green"]
    recorded = [x.extra["nearest_feature_distance"] for x in generated]
    assert recorded[0] == pytest.approx(0.0, abs=1e-6) and recorded[1] == pytest.approx(step, rel=1e-5)
    assert "nearest_mse" not in generated[0].extra  # the pixel filter was not asked for

    # an image exactly at the threshold is kept ("closer than"), one just beyond it is dropped
    exact = recorded[1]
    kept, dropped = filter_by_distance(generated, training, min_feature_distance=exact, **by_features)
    assert [x.source_id for x in dropped] == ["same-features"]
    beyond = float(np.nextafter(exact, np.inf))
    kept, dropped = filter_by_distance(generated, training, min_feature_distance=beyond, **by_features)
    assert [x.source_id for x in dropped] == ["same-features", "forty-levels-blue"]


def test_feature_distance_is_measured_in_eval_mode_whatever_the_models_mode(splits):
    """Batch-norm batch statistics and dropout would put an exact copy far from its original."""
    training = list(splits["train"]["image"][:8])
    generated = [item(image.copy(), f"copy-{n}") for n, image in enumerate(training[:3])]
    generated += [item(image.copy(), f"other-{n}") for n, image in enumerate(splits["train"]["image"][8:11])]
    torch.manual_seed(0)
    model = SkinClassifier(backbone="resnet18", num_labels=5, image_size=SIZE).train()
    kept, dropped = filter_by_distance(generated, training, min_feature_distance=1e-4, feature_model=model, size=SIZE)
    assert [x.source_id for x in dropped] == ["copy-0", "copy-1", "copy-2"]
    assert [x.source_id for x in kept] == ["other-0", "other-1", "other-2"]
    assert model.training  # the caller's mode is restored


def test_pixel_and_feature_filters_drop_the_union():
    training = [solid((100, 100, 100))]
    top_left_only = np.full((SIZE, SIZE, 3), 255, dtype=np.uint8)
    top_left_only[0, 0] = (100, 100, 100)
    generated = [
        item(Image.fromarray(top_left_only), "feature-close"),  # far in pixels, identical features
        item(solid((100, 100, 101)), "pixel-close"),  # close in pixels; a different top-left pixel
        item(solid((0, 0, 0)), "far"),
    ]
    features = PixelFeatures()
    only_pixels = filter_by_distance(generated, training, min_mse=1e-3, size=SIZE)
    by_features = {"min_feature_distance": 1e-3, "feature_model": features, "size": SIZE}
    only_features = filter_by_distance(generated, training, **by_features)
    both = filter_by_distance(generated, training, min_mse=1e-3, **by_features)
    assert [x.source_id for x in only_pixels[1]] == ["pixel-close"]
    assert [x.source_id for x in only_features[1]] == ["feature-close"]
    assert [x.source_id for x in both[1]] == ["feature-close", "pixel-close"]
    assert [x.source_id for x in both[0]] == ["far"]


def test_distance_filter_without_thresholds_empty_input_and_missing_feature_model():
    training = [solid((100, 100, 100))]
    generated = [item(solid((100, 100, 100)), "copy")]
    kept, dropped = filter_by_distance(generated, training)
    assert [x.source_id for x in kept] == ["copy"] and dropped == [] and kept is not generated
    assert filter_by_distance([], training, min_mse=1.0) == ([], [])
    assert filter_by_distance([], training, min_feature_distance=1.0, feature_model=PixelFeatures()) == ([], [])
    with pytest.raises(ValueError, match="min_feature_distance needs feature_model"):
        filter_by_distance(generated, training, min_feature_distance=0.1)
    with pytest.raises(ValueError, match="at least one training image"):
        filter_by_distance(generated, [], min_mse=1.0)


# -- filter_by_reference --------------------------------------------------------------------------------------------


def test_reference_filter_drops_below_min_probability_and_keeps_the_boundary():
    # label 1: p(label) = red / 255; label 0: p(label) = 1 - red / 255
    generated = [
        item(solid((51, 0, 0)), "p0.2", label=1),
        item(solid((204, 0, 0)), "p0.8", label=1),
        item(solid((26, 0, 0)), "label0-p0.9", label=0),
        item(solid((128, 0, 0)), "p0.5", label=1),
        item(solid((255, 0, 0)), "label0-p0", label=0),
    ]
    kept, dropped = filter_by_reference(generated, RedReference(), min_probability=0.5)
    assert [x.source_id for x in kept] == ["p0.8", "label0-p0.9", "p0.5"]
    assert [x.source_id for x in dropped] == ["p0.2", "label0-p0"]
    recorded = [x.extra["reference_probability"] for x in generated]
    np.testing.assert_allclose(recorded, [51 / 255, 204 / 255, 1 - 26 / 255, 128 / 255, 0.0], atol=1e-6)

    # p(label) equal to the threshold is recognised ("reaches it"); a hair above the threshold is not
    exact = generated[1].extra["reference_probability"]
    kept, _ = filter_by_reference(generated, RedReference(), min_probability=exact)
    assert [x.source_id for x in kept] == ["p0.8", "label0-p0.9"]
    kept, _ = filter_by_reference(generated, RedReference(), min_probability=float(np.nextafter(exact, 1.0)))
    assert [x.source_id for x in kept] == ["label0-p0.9"]


def test_reference_filter_without_threshold_keeps_the_top_class_across_batches():
    rows = {
        10: [0.40, 0.35, 0.25],  # top class 0 with p < 0.5
        20: [0.30, 0.45, 0.25],
        30: [0.10, 0.10, 0.80],
        40: [0.34, 0.33, 0.33],
    }
    generated = [
        item(solid((10, 0, 0)), "top0-label0", label=0),
        item(solid((20, 0, 0)), "top1-label0", label=0),
        item(solid((30, 0, 0)), "top2-label2", label=2),
        item(solid((40, 0, 0)), "top0-label1", label=1),
        item(solid((20, 0, 0)), "top1-label1", label=1),
    ]
    reference = TableReference(rows)
    kept, dropped = filter_by_reference(generated, reference, batch_size=2)
    assert reference.batches == [2, 2, 1]
    assert [x.source_id for x in kept] == ["top0-label0", "top2-label2", "top1-label1"]
    assert [x.source_id for x in dropped] == ["top1-label0", "top0-label1"]
    assert [x.extra["reference_probability"] for x in generated] == pytest.approx([0.40, 0.30, 0.80, 0.33, 0.45])
    assert filter_by_reference([], reference) == ([], [])


# -- fine_tune in the loop ------------------------------------------------------------------------------------------


def test_fine_tune_starts_each_round_from_a_copy_of_the_current_model(splits, tmp_path, monkeypatch):
    calls = spy_training(monkeypatch, train=True)  # real (one-epoch) training: a fine-tuned model must train
    result = run_hardcase_loop(splits, tiny_gan(), loop_config(rounds=2, patience=2, fine_tune=True), str(tmp_path))

    assert len(result["rounds"]) == 3 and len(calls) == 3  # baseline + two rounds
    assert calls[0]["model"] is None  # the baseline is trained anew
    for k in (1, 2):
        before, call = calls[k - 1], calls[k]
        assert call["model"] is not None and call["model"] is not before["returned"]  # a copy, not the model itself
        assert same_state(call["state"], before["returned_state"])  # ... with the current model's weights
        assert not same_state(call["returned_state"], call["state"])  # and fine-tuning changed them
    # fine-tuning the copies left the baseline and the round-1 model as they were
    assert result["models"]["baseline"] is calls[0]["returned"]
    assert same_state(state(calls[0]["returned"]), calls[0]["returned_state"])
    assert same_state(state(calls[1]["returned"]), calls[1]["returned_state"])
    assert result["models"]["final"] is calls[2]["returned"]
    # the copy's feature hook writes into the copy: features of the final model work, the baseline sees nothing
    final, baseline, untouched = result["models"]["final"], result["models"]["baseline"], object()
    baseline._captured = untouched
    assert final.features(torch.zeros(2, 3, SIZE, SIZE)).shape[0] == 2
    assert baseline._captured is untouched

    records = Ledger(result["paths"]["ledger"]).read()
    assert records[0]["event"] == "start" and records[0]["config"]["fine_tune"] is True
    assert [r["config"]["fine_tune"] for r in records if r["event"] == "round" and r["round"] > 0] == [True, True]


def test_without_fine_tune_every_round_trains_a_new_model(splits, tmp_path, monkeypatch):
    calls = spy_training(monkeypatch, train=False)
    result = run_hardcase_loop(splits, tiny_gan(), loop_config(fine_tune=False), str(tmp_path))
    assert len(calls) == 2 and all(call["model"] is None for call in calls)
    assert calls[1]["pool"] == result["rounds"][1]["pool"]["total"] > len(splits["train"])
    records = Ledger(result["paths"]["ledger"]).read()
    assert records[0]["config"]["fine_tune"] is False and records[2]["config"]["fine_tune"] is False


# -- the distance filter in the loop --------------------------------------------------------------------------------


def plant_training_copies(monkeypatch, train_images, every=2):
    """Makes every `every`-th generated image of a round an exact copy of a training image, marked in `extra`.

    Returns a list with, per round (per call of the generator), the (source_id, strategy, seed) of the copies.
    """
    real = hardcase.synthesize_hard_cases
    planted = []

    def synthesize(*args, **kwargs):
        generated = real(*args, **kwargs)
        planted.append([])
        for n, x in enumerate(generated):
            if n % every == 0:
                x.image = train_images[n].copy()
                x.extra["planted"] = True
                planted[-1].append((x.source_id, x.strategy, x.seed))
        return generated

    monkeypatch.setattr(hardcase, "synthesize_hard_cases", synthesize)
    return planted


@pytest.mark.parametrize(
    "filters, recorded",
    [({"min_mse": 1e-4}, "nearest_mse"), ({"min_feature_distance": 1e-3}, "nearest_feature_distance")],
    ids=["pixels", "features"],
)
def test_loop_drops_training_copies_records_them_and_writes_only_the_rest(
    splits, tmp_path, monkeypatch, filters, recorded
):
    train_images = list(splits["train"]["image"])
    training_hashes = {image_hash(image) for image in train_images}
    embedded_by = []
    calls = spy_training(monkeypatch, train=False, pixel_features=embedded_by)
    planted = plant_training_copies(monkeypatch, train_images)
    config = loop_config(rounds=2, patience=2, per_case=3, **filters)
    result = run_hardcase_loop(splits, tiny_gan(), config, str(tmp_path))

    assert len(result["rounds"]) == 3 and len(planted) == 2
    if "min_feature_distance" in filters:  # the baseline (trained on real data only) embeds, in every round
        assert embedded_by and all(model is result["models"]["baseline"] for model in embedded_by)
        assert result["models"]["final"] is not result["models"]["baseline"]
    else:
        assert not embedded_by
    (threshold,) = filters.values()
    records = {r["round"]: r for r in Ledger(result["paths"]["ledger"]).read() if r["event"] == "round"}
    synthetic_so_far = 0
    for k in (1, 2):
        summary, copies = result["rounds"][k], planted[k - 1]
        generated_total = 3 * len(summary["mined_ids"])
        kept_total = generated_total - len(copies)
        synthetic_so_far += kept_total
        assert len(copies) == (generated_total + 1) // 2 >= 1
        # result and ledger name exactly the planted copies as dropped by the distance filter, with the distance
        for entry in (summary, records[k]):
            assert sorted((d["source_id"], d["strategy"], d["seed"]) for d in entry["dropped"]) == sorted(copies)
            assert all(d["dropped_by"] == "distance" and d["planted"] for d in entry["dropped"])
            assert all(d[recorded] < threshold for d in entry["dropped"])
            assert entry["pool"]["dropped_this_round"] == len(copies)
            assert entry["pool"]["synthetic_this_round"] == kept_total
            assert entry["pool"]["synthetic"] == synthetic_so_far
            assert entry["pool"]["total"] == len(splits["train"]) + synthetic_so_far
        assert calls[k]["pool"] == summary["pool"]["total"]  # the retraining saw only the kept images

        # the folder holds only the kept images: no planted seed, no training pixels, one row per kept image
        folder = summary["synthetic_folder"]
        rows = list(csv.DictReader(read_text(os.path.join(folder, "metadata.csv")).splitlines()))
        assert len(rows) == len(os.listdir(os.path.join(folder, "images"))) == kept_total
        planted_keys = {(source, int(seed)) for source, _, seed in copies}
        assert not planted_keys & {(row["source_id"], int(row["seed"])) for row in rows}
        written = {image_hash(Image.open(os.path.join(folder, row["file_name"]))) for row in rows}
        assert not written & training_hashes
        listed = [(case["sample_id"], g) for case in summary["hard_cases"] for g in case["generated"]]
        assert len(listed) == kept_total and not planted_keys & {(source, g["seed"]) for source, g in listed}
        assert all(os.path.isfile(g["file"]) for _, g in listed)


def test_loop_without_distance_thresholds_drops_nothing(splits, tmp_path, monkeypatch):
    spy_training(monkeypatch, train=False)
    filtered = []
    real = hardcase.filter_by_distance
    monkeypatch.setattr(hardcase, "filter_by_distance", lambda *a, **k: filtered.append(1) or real(*a, **k))
    plant_training_copies(monkeypatch, list(splits["train"]["image"]))
    result = run_hardcase_loop(splits, tiny_gan(), loop_config(), str(tmp_path))
    summary = result["rounds"][1]
    assert not filtered and summary["dropped"] == [] and summary["pool"]["dropped_this_round"] == 0
    assert summary["pool"]["synthetic_this_round"] == 2 * len(summary["mined_ids"])


def test_copy_is_independent_of_the_original_for_a_skin_classifier():
    """What fine_tune relies on: a deep copy of a SkinClassifier trains without touching the original."""
    torch.manual_seed(0)
    model = SkinClassifier(backbone="mobilenet_v3_small", num_labels=3, image_size=SIZE)
    copied = copy.deepcopy(model).eval()
    with torch.no_grad():
        next(copied.parameters()).add_(1.0)
    assert not torch.equal(next(copied.parameters()), next(model.parameters()))
    model._captured = untouched = object()
    assert copied.features(torch.zeros(1, 3, SIZE, SIZE)).shape[0] == 1
    assert model._captured is untouched
