"""The hard-case loop end to end on tiny models, the synthesis strategies, provenance and the leakage guards."""

import csv
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image
from torch import nn

from dermdiff.conditions import get_registry
from dermdiff.data import make_splits, phantom_dataset
from dermdiff.data.synthetic_folder import write_synthetic
from dermdiff.hardcase import (
    HardCaseConfig,
    check_no_synthetic_in_evaluation,
    image_hash,
    report_markdown,
    run_hardcase_loop,
    seed_control_markdown,
    skin_types_of,
)
from dermdiff.hardcase import loop as hardcase
from dermdiff.hardcase.filters import filter_by_distance
from dermdiff.hardcase.mining import LEAKAGE_WARNING, Ledger, mine_hard_cases
from dermdiff.hardcase.synthesis import (
    AdversarialGuidance,
    CaseSource,
    check_strategies,
    derive_seed,
    generate_from_maps,
    supported_strategies,
    synthesize_hard_cases,
)
from dermdiff.models.dermgan import DermGANGenerator
from dermdiff.models.semantic_unet import SemanticUNet2DModel
from dermdiff.pipelines.generation_settings import GenerationSettings
from dermdiff.pipelines.pipeline_dermdiff import DermDiffPipeline
from dermdiff.pipelines.pipeline_dermgan import DermGANPipeline
from dermdiff.pipelines.scheduler_names import use_scheduler

SIZE = 16
STEPS_2 = GenerationSettings(num_inference_steps=2)
TINY_CLASSIFIER = {
    "backbone": "mobilenet_v3_small",
    "resolution": SIZE,
    "num_epochs": 1,
    "batch_size": 16,
    "patience": None,
    "checkpoints_total_limit": 1,
}


def tiny_diffusion() -> DermDiffPipeline:
    torch.manual_seed(0)
    unet = SemanticUNet2DModel(
        sample_size=SIZE,
        **get_registry("phantom").model_kwargs(),
        block_out_channels=(8, 16),
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return DermDiffPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100))


def tiny_gan() -> DermGANPipeline:
    torch.manual_seed(0)
    generator = DermGANGenerator(sample_size=SIZE, block_out_channels=(8, 16, 32), **get_registry("phantom").model_kwargs())
    return DermGANPipeline(dermgan=generator)



@pytest.fixture(scope="module")
def splits():
    weights = {"nevus": 4, "melanoma": 1, "psoriasis": 4, "dermatofibroma": 4, "vascular": 1}
    data = phantom_dataset(n=140, size=SIZE, seed=0, class_weights=weights)
    return make_splits(data, seed=0)


def phantom_case(label="melanoma", sample_id="case-0", target=None) -> CaseSource:
    from dermdiff.data.phantom import generate_phantom_sample

    sample = generate_phantom_sample(label, skin_type=3, size=SIZE, seed=1)
    index = sample.semantic_map.registry.index(label)
    return CaseSource(sample_id, index, sample.semantic_map, sample.image, target)


def read_text(path) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def as_array(items) -> np.ndarray:
    return np.stack([np.asarray(item.image, dtype=np.float64) / 255 for item in items])


class MeanColourClassifier(nn.Module):
    """Toy classifier: logits linear in the mean of each colour channel; class 1 likes red, class 0 blue."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]]))
            self.linear.bias.zero_()

    def forward(self, sample):
        return self.linear(sample.mean(dim=(2, 3)))


# -- strategies and capabilities -----------------------------------------------------------------------------------
def test_capabilities_follow_the_call_signature():
    assert supported_strategies(tiny_diffusion()) == ("map", "sdedit", "adversarial")
    assert supported_strategies(tiny_gan()) == ("map",)
    with pytest.raises(ValueError, match=r"DermGANPipeline cannot run strategy \['sdedit', 'adversarial'\]"):
        check_strategies(tiny_gan(), ["map", "sdedit", "adversarial"])
    with pytest.raises(ValueError, match="unknown strategy"):
        check_strategies(tiny_diffusion(), ["inpaint"])
    with pytest.raises(ValueError, match="cannot run strategy"):
        synthesize_hard_cases(tiny_gan(), [phantom_case()], strategies=("sdedit",))


@pytest.mark.parametrize("make_pipe", [tiny_diffusion, tiny_gan])
def test_map_strategy_labels_with_the_true_class_and_records_provenance(make_pipe):
    pipe = make_pipe()
    case = phantom_case("melanoma", "m-7", target=0)
    images = synthesize_hard_cases(pipe, [case], strategies=("map",), per_case=3, seed=5, settings=STEPS_2)
    assert len(images) == 3
    assert {item.label_name for item in images} == {"melanoma"} and {item.source_id for item in images} == {"m-7"}
    assert [item.seed for item in images] == [derive_seed(5, "m-7", "map", k) for k in range(3)]
    assert all(item.semantic_map.condition == "melanoma" for item in images)
    assert len({item.semantic_map.boxes[0] for item in images}) > 1  # the map was jittered
    again = synthesize_hard_cases(pipe, [case], strategies=("map",), per_case=3, seed=5, settings=STEPS_2)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(images, again))


def test_sdedit_keeps_the_image_closer_at_low_strength():
    pipe = tiny_diffusion()
    case = phantom_case()
    original = np.asarray(case.image, dtype=np.float64)
    distance = {}
    for strength in (0.5, 1.0):
        item = synthesize_hard_cases(
            pipe, [case], strategies=("sdedit",), per_case=1, seed=0,
            settings=GenerationSettings(strength=strength, num_inference_steps=4),
        )[0]
        assert item.strategy == "sdedit" and item.extra["strength"] == strength
        distance[strength] = np.mean((np.asarray(item.image, dtype=np.float64) - original) ** 2)
    assert distance[0.5] < distance[1.0]


def test_adversarial_gradient_points_towards_the_target_class():
    classifier = MeanColourClassifier()
    sample = torch.zeros(2, 3, 8, 8)
    guidance = AdversarialGuidance(classifier, targets=[1, 0], scale=0.1, num_steps=4, start=0.0)
    stepped = guidance(None, 0, None, {"latents": sample})["latents"]
    probabilities = torch.softmax(classifier(stepped), dim=-1)
    assert probabilities[0, 1] > 0.5 and probabilities[1, 0] > 0.5  # both moved towards their targets
    # red up for target 1, blue up for target 0; the RMS of the change is the scale
    assert stepped[0, 0].mean() > 0 > stepped[0, 2].mean() and stepped[1, 2].mean() > 0 > stepped[1, 0].mean()
    assert torch.allclose((stepped - sample).flatten(1).pow(2).mean(1).sqrt(), torch.full((2,), 0.1), atol=1e-5)
    # only the later part of sampling is guided and the last step is left to the denoiser
    late = AdversarialGuidance(classifier, targets=[1, 0], scale=0.1, num_steps=4, start=0.5)
    assert [late.is_guided(i) for i in range(4)] == [False, False, True, False]
    assert late(None, 0, None, {"latents": sample})["latents"] is sample


def test_adversarial_strategy_changes_samples_through_the_pipeline():
    pipe = tiny_diffusion()
    maps = [phantom_case().semantic_map] * 2
    common = {"labels": [1, 1], "seeds": [3, 4], "source_ids": ["a", "b"]}
    plain = generate_from_maps(pipe, maps, settings=GenerationSettings(num_inference_steps=3), **common)
    classifier = MeanColourClassifier()
    pushed = generate_from_maps(
        pipe,
        maps,
        strategy="adversarial",
        classifier=classifier,
        targets=[1, 0],
        settings=GenerationSettings(num_inference_steps=3, adversarial_guidance_scale=0.5, adversarial_start=0.0),
        **common,
    )
    off = generate_from_maps(
        pipe,
        maps,
        strategy="adversarial",
        classifier=classifier,
        targets=[1, 0],
        settings=GenerationSettings(num_inference_steps=3, adversarial_guidance_scale=0.0, adversarial_start=0.0),
        **common,
    )
    as_array = lambda items: np.stack([np.asarray(item.image, dtype=np.float64) / 255 for item in items])
    assert np.array_equal(as_array(plain), as_array(off))
    assert not np.array_equal(as_array(plain), as_array(pushed))
    red_minus_blue = as_array(pushed)[..., 0].mean(axis=(1, 2)) - as_array(plain)[..., 0].mean(axis=(1, 2))
    assert red_minus_blue[0] > red_minus_blue[1]  # target 1 (red) gained more red than target 0 (blue)
    assert [item.target for item in pushed] == [1, 0] and pushed[0].label == 1


@pytest.mark.parametrize("scheduler, strength", [(None, None), (None, 0.5), ("heun", 0.5)])
def test_adversarial_guidance_counts_the_steps_the_pipeline_runs(scheduler, strength):
    """The guided steps follow the schedule the pipeline loops over (diffusers' img2img tail, times the
    scheduler's order), not num_inference_steps * strength."""
    from diffusers import HeunDiscreteScheduler

    pipe = tiny_diffusion()
    if scheduler == "heun":
        pipe.scheduler = HeunDiscreteScheduler.from_config(pipe.scheduler.config)
    guidance = AdversarialGuidance(MeanColourClassifier(), targets=[1], scale=0.1, start=0.0)
    case = phantom_case()
    extra = {} if strength is None else {"image": [case.image], "strength": strength}
    pipe(semantic_map=[case.semantic_map], num_inference_steps=4, generator=torch.Generator().manual_seed(0),
         callback_on_step_end=guidance, callback_on_step_end_tensor_inputs=["latents"], output_type="np", **extra)
    pipe.scheduler.set_timesteps(4)
    expected = len(pipe.get_timesteps(4, strength)) if strength else len(pipe.scheduler.timesteps)
    assert guidance.num_steps == pipe.num_timesteps == expected
    assert guidance.guided_steps == list(range(expected - 1))  # every step but the last
    if scheduler == "heun":
        assert expected == 3 and int(4 * strength) == 2  # what the old count (ignoring order) would have used


def test_generation_settings_validate_once_and_stay_frozen():
    import dataclasses

    for bad, match in [({"num_inference_steps": 0}, "num_inference_steps must be >= 1"),
                       ({"strength": 0.0}, r"strength must be in \(0, 1\]"),
                       ({"strength": float("nan")}, "strength"),
                       ({"adversarial_guidance_scale": -1.0}, "adversarial_guidance_scale must be >= 0"),
                       ({"adversarial_start": 1.5}, r"adversarial_start must be in \[0, 1\]"),
                       ({"max_shift": -0.1}, r"max_shift must be in \[0, 1\]"),
                       ({"max_shift": 1.5}, r"max_shift must be in \[0, 1\]"),
                       ({"batch_size": 0}, "batch_size must be >= 1"),
                       ({"scheduler": "heun"}, "scheduler must be one of"),
                       ({"guidance_scale": float("inf")}, "guidance_scale must be a finite number")]:
        with pytest.raises(ValueError, match=match):
            GenerationSettings(**bad)
    with pytest.raises(ValueError, match="adversarial_start"):  # the guidance checks through the same class
        AdversarialGuidance(MeanColourClassifier(), targets=[0], scale=0.1, start=2.0)
    settings = GenerationSettings(scheduler=" DPM ")
    assert settings.scheduler == "dpm"
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'strength'"):
        settings.strength = 0.9
    assert HardCaseConfig(generation={"strength": 0.3}).generation == GenerationSettings(strength=0.3)
    # what each pipeline is given: a GAN takes no steps or guidance; None guidance leaves the pipeline's own
    assert STEPS_2.call_kwargs(tiny_diffusion()) == {"num_inference_steps": 2}
    assert GenerationSettings(guidance_scale=2.0).call_kwargs(tiny_gan()) == {}
    with pytest.raises(ValueError, match="DermGANPipeline has no scheduler"):
        use_scheduler(tiny_gan(), GenerationSettings(scheduler="ddim").scheduler)


def test_mining_records_the_confusion_target():
    cases = mine_hard_cases(["a", "b"], [0, 0], [[0.3, 0.6, 0.1], [0.5, 0.1, 0.4]], margin=0.2)
    assert [(c.sample_id, c.confusion_target) for c in cases] == [("a", 1), ("b", 2)]


def test_distance_filter_drops_near_copies():
    case = phantom_case()
    images = generate_from_maps(
        tiny_gan(), [case.semantic_map] * 2, labels=[1, 1], seeds=[0, 1], source_ids=["x", "y"]
    )
    images[0].image = case.image.copy()  # a copy of a training image
    kept, dropped = filter_by_distance(images, [case.image], min_mse=1e-4, size=SIZE)
    assert [item.source_id for item in dropped] == ["x"] and [item.source_id for item in kept] == ["y"]
    assert dropped[0].extra["nearest_mse"] == pytest.approx(0.0, abs=1e-6)


def test_written_folder_reads_back_with_provenance(tmp_path):
    from dermdiff.data import load_dataset_dir

    pipe = tiny_gan()
    images = synthesize_hard_cases(pipe, [phantom_case("vascular", "v-1")], per_case=2, seed=0)
    write_synthetic(images, str(tmp_path / "syn"), "phantom", prefix="syn-r1")
    loaded = load_dataset_dir(str(tmp_path / "syn"))
    assert loaded["label_name"] == ["vascular", "vascular"] and loaded["image_id"] == ["syn-r1-00000", "syn-r1-00001"]
    rows = list(csv.DictReader(read_text(tmp_path / "syn" / "metadata.csv").splitlines()))
    assert rows[0]["source_id"] == "v-1" and rows[0]["strategy"] == "map" and int(rows[0]["seed"]) == images[0].seed


def test_synthetic_in_an_evaluation_split_is_refused(splits):
    images = synthesize_hard_cases(tiny_gan(), [phantom_case()], per_case=1, seed=0)
    test_image = splits["test"][0]["image"]
    fingerprints = ({"00001"}, {image_hash(test_image)})
    check_no_synthetic_in_evaluation(fingerprints, images)
    images[0].image = test_image.copy()
    with pytest.raises(RuntimeError, match="evaluation split"):
        check_no_synthetic_in_evaluation(fingerprints, images)


# -- the loop -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_round(splits, tmp_path_factory):
    """One round of the loop end to end, run once and shared by the tests below (it is the slow part)."""
    output_dir = str(tmp_path_factory.mktemp("hardcase") / "loop")
    config = HardCaseConfig(
        rounds=1,
        margin=0.3,
        max_cases=3,
        strategies=("map", "sdedit", "adversarial"),
        per_case=1,
        generation=GenerationSettings(num_inference_steps=2, strength=1.0),
        n_boot=50,
        seed=3,
        classifier=TINY_CLASSIFIER,
    )
    result = run_hardcase_loop(splits, tiny_diffusion(), config, output_dir)
    records = Ledger(os.path.join(output_dir, "ledger.jsonl")).read()
    folder = os.path.join(output_dir, "synthetic", "round_1")
    return SimpleNamespace(
        config=config,
        output_dir=output_dir,
        result=result,
        records=records,
        round_1=records[2],
        folder=folder,
        rows=list(csv.DictReader(read_text(os.path.join(folder, "metadata.csv")).splitlines())),
        report=read_text(os.path.join(output_dir, "report.md")),
        payload=json.loads(read_text(os.path.join(output_dir, "report.json"))),
    )


def test_one_round_ledger_records_config_index_seeds_and_mined_ids(splits, one_round):
    # ledger: start, baseline, one round, end; the round records config, index, seeds and mined ids
    records, round_1 = one_round.records, one_round.round_1
    assert [r["event"] for r in records] == ["start", "round", "round", "end"]
    assert round_1["round"] == 1 and round_1["config"]["strategies"] == ["map", "sdedit", "adversarial"]
    assert round_1["config"]["generation"] == {**vars(GenerationSettings()), "num_inference_steps": 2, "strength": 1.0}
    assert round_1["seeds"]["generate"] == derive_seed(3, "generate", 1)
    assert 1 <= len(round_1["mined_ids"]) <= 3 and set(round_1["mined_ids"]) <= set(splits["mining"]["image_id"])
    assert round_1["test"]["overall"]["balanced_accuracy"]["ci"] is not None


def test_one_round_generated_images_carry_provenance(splits, one_round):
    # provenance: every generated image names its case, strategy, seed and file; labels are the true class
    round_1, rows, folder = one_round.round_1, one_round.rows, one_round.folder
    mined = {case["sample_id"]: case for case in round_1["hard_cases"]}
    generated = [item for case in round_1["hard_cases"] for item in case["generated"]]
    assert len(rows) == len(generated) == round_1["pool"]["synthetic_this_round"] >= len(mined)
    names = one_round.result["label_names"]
    for row in rows:
        assert names.index(row["label"]) == mined[row["source_id"]]["label"]
        assert os.path.isfile(os.path.join(folder, row["file_name"]))
    assert {item["strategy"] for item in generated} >= {"map", "sdedit"}
    assert round_1["pool"]["total"] == len(splits["train"]) + len(rows)


def test_one_round_synthetic_images_stay_out_of_evaluation_splits(splits, one_round):
    # synthetic images never appear in the test (or any evaluation) split
    rows, folder = one_round.rows, one_round.folder
    synthetic_hashes = {image_hash(Image.open(os.path.join(folder, r["file_name"]))) for r in rows}
    for name in ("validation", "mining", "test"):
        assert not synthetic_hashes & {image_hash(image) for image in splits[name]["image"]}
        assert not {r["image_id"] for r in rows} & set(splits[name]["image_id"])
    assert one_round.round_1["test"]["n"] == len(splits["test"])


def test_one_round_writes_markdown_json_and_plot_reports(one_round):
    # reports: markdown with the before/after table, JSON, plot
    report, payload = one_round.report, one_round.payload
    assert "## Round 1: before / after on the test split" in report and "McNemar" in report
    assert "LEAKAGE" not in report
    assert [row["round"] for row in payload["rounds"]] == [0, 1]
    assert set(payload["rounds"][1]["before"]) == set(payload["rounds"][1]["after"])
    assert "melanoma sensitivity" in payload["rounds"][1]["after"]
    assert os.path.getsize(os.path.join(one_round.output_dir, "metrics_per_round.png")) > 1000


def test_one_round_rescored_hard_cases_match_mcnemar_everywhere(splits, one_round):
    # hard cases re-scored: round 1's model is compared with the baseline it was mined from, so fixed and
    # broken are McNemar's c and b; the same counts reach the ledger, report.json and report.md
    round_1, report, payload = one_round.round_1, one_round.report, one_round.payload
    rescored = round_1["fixed_broken"]["overall"]
    mcnemar = round_1["comparison"]["mcnemar"]
    assert (rescored["fixed"], rescored["broken"]) == (mcnemar["c"], mcnemar["b"])
    assert rescored["wrong_before"] + rescored["right_before"] == len(splits["test"])
    assert rescored["net"]["ci"][0] <= rescored["net"]["value"] <= rescored["net"]["ci"][1]
    assert sum(row["n"] for row in round_1["fixed_broken"]["per_class"].values()) == len(splits["test"])
    assert payload["rounds"][1]["fixed_broken"]["overall"] == rescored
    assert payload["baseline_vs_final"]["fixed_broken"]["overall"] == rescored  # one round: final = round 1
    assert one_round.records[-1]["baseline_vs_final_fixed_broken"]["overall"] == rescored
    assert "### Hard cases re-scored: baseline → round 1 (test split)" in report
    assert f"| all | {len(splits['test'])} | {rescored['wrong_before']} | {rescored['fixed']} (" in report


def test_one_round_reports_split_by_skin_type(splits, one_round):
    # per skin type: the phantom's test split has Fitzpatrick types, so every report splits by them too
    result, report, payload = one_round.result, one_round.report, one_round.payload
    types = sorted({str(t) for t in splits["test"]["skin_type"]}, key=int)
    assert list(result["rounds"][0]["test_by_skin_type"]) == types
    by_type = result["rounds"][1]["test_by_skin_type"]
    assert sum(entry["n"] for entry in by_type.values()) == len(splits["test"])
    assert set(result["rounds"][1]["comparison_by_skin_type"]) == set(types)
    final_by_type = result["baseline_vs_final_by_skin_type"]
    assert list(final_by_type) == types and final_by_type[types[0]]["comparison"]["names"] == ["baseline", "final"]
    for skin_type in types:  # a type's own test images, the same predictions as the overall evaluation
        rows = [i for i, t in enumerate(splits["test"]["skin_type"]) if str(t) == skin_type]
        after = by_type[skin_type]["metrics"]["confusion_matrix"]
        assert sum(map(sum, after)) == len(rows)
    assert np.sum([by_type[t]["metrics"]["confusion_matrix"] for t in types], axis=0).tolist() == (
        result["rounds"][1]["test"]["confusion_matrix"]
    )
    assert "## Per skin type (test split)" in report and "### Baseline → final" in report
    assert report.count("| skin type | n |") == 2  # round 1 and baseline -> final
    assert set(payload["baseline_vs_final_by_skin_type"]) == set(types)
    assert set(one_round.round_1["fixed_broken"]["by_group"]) == set(types)
    assert f"| skin type {types[0]} |" in report
    assert set(payload["rounds"][1]["by_skin_type"][types[0]]) == {"n", "before", "after", "mcnemar", "difference"}
    assert one_round.records[-1]["baseline_vs_final_by_skin_type"][types[0]]["comparison"]["mcnemar"]["p_value"] <= 1


def test_one_round_reports_without_skin_types_have_no_per_type_section(splits, one_round):
    # a test split without skin types (HAM10000): no per-type keys, no empty section
    result = one_round.result
    plain = {key: value for key, value in result.items() if key != "baseline_vs_final_by_skin_type"}
    plain["rounds"] = [{k: v for k, v in s.items() if "skin_type" not in k} for s in result["rounds"]]
    for entry in [plain] + plain["rounds"]:
        for key in ("fixed_broken", "baseline_vs_final_fixed_broken"):
            if key in entry:
                entry[key] = {k: v for k, v in entry[key].items() if k != "by_group"}
    assert "skin type" not in report_markdown(plain).lower()
    assert skin_types_of(splits["test"].remove_columns("skin_type")) is None
    assert skin_types_of(splits["test"].map(lambda row: {"skin_type": None})) is None


def test_one_round_seed_control_uses_real_data_and_the_last_classifier_seed(splits, one_round, monkeypatch):
    # seed control: real data only, the last round's classifier seed, paired with the final model
    calls = []
    real_fit = hardcase.fit_classifier
    monkeypatch.setattr(hardcase, "fit_classifier", lambda pool, *a, **k: calls.append((pool, a)) or real_fit(pool, *a, **k))
    control = hardcase.seed_control(splits, one_round.result, one_round.config, one_round.output_dir)
    (pool, args), = calls
    assert pool is splits["train"] and args[-1] == derive_seed(3, "classifier", 1)
    assert control["names"] == ["real only, same seed", "final"] and control["mcnemar"]["p_value"] <= 1
    assert "| metric | real only, same seed | final |" in seed_control_markdown(control)


def test_test_mining_is_refused_and_warned_in_every_report(splits, tmp_path):
    config = {
        "rounds": 1,
        "mining_split": "test",
        "strategies": ("map",),
        "per_case": 1,
        "max_cases": 1,
        "n_boot": 20,
        "classifier": TINY_CLASSIFIER,
    }
    with pytest.raises(ValueError, match="refusing to mine"):
        run_hardcase_loop(splits, tiny_gan(), config, str(tmp_path / "refused"))
    with pytest.warns(UserWarning, match="LEAKAGE"):
        result = run_hardcase_loop(splits, tiny_gan(), dict(config, allow_test_mining=True), str(tmp_path / "leaky"))
    report = read_text(result["paths"]["markdown"])
    rounds_run = len(result["rounds"]) - 1
    assert report.count(LEAKAGE_WARNING) == 2 + rounds_run  # top, every round's table, baseline vs final
    assert json.loads(read_text(result["paths"]["json"]))["leakage_warning"] == LEAKAGE_WARNING
    assert all(record["leakage_warning"] == LEAKAGE_WARNING for record in Ledger(result["paths"]["ledger"]).read())


def test_loop_rejects_a_strategy_the_generator_cannot_do(splits, tmp_path):
    with pytest.raises(ValueError, match="DermGANPipeline cannot run strategy"):
        run_hardcase_loop(
            splits, tiny_gan(), {"strategies": ("adversarial",), "classifier": TINY_CLASSIFIER}, str(tmp_path)
        )
    with pytest.raises(ValueError, match="strategies must be"):
        HardCaseConfig(strategies=("nope",))


# -- the augmentation experiment (Ghorbani et al. 2020) -------------------------------------------------------
def test_rare_classes_rule():
    from dermdiff.hardcase.augmentation import rare_classes

    assert rare_classes([0] * 30 + [1] * 2 + [2] * 30 + [3] * 3, 4) == [1, 3]
    assert rare_classes([0] * 10 + [1] * 9, 2) == [1]  # none under half the mean: the rarest


def test_augmentation_experiment_end_to_end(splits, tmp_path):
    from dermdiff.hardcase.augmentation import run_augmentation_experiment

    result = run_augmentation_experiment(
        splits, tiny_gan(), {"num_images": 3, "n_boot": 30, "classifier": TINY_CLASSIFIER}, str(tmp_path / "aug")
    )
    assert result["classes"] == ["melanoma", "vascular"] and result["synthetic"] == {"melanoma": 3, "vascular": 3}
    payload = json.loads(read_text(result["paths"]["json"]))
    assert payload["pool"] == {"real": len(splits["train"]), "synthetic": 6}
    assert all(item["source_id"].startswith("validation:") for item in payload["provenance"])
    validation_ids = set(splits["validation"]["image_id"])
    assert {item["source_id"].split(":", 1)[1] for item in payload["provenance"]} <= validation_ids
    assert payload["mcnemar"]["p_value"] <= 1 and "sensitivity" in payload["difference"]["per_class"]["melanoma"]
    report = read_text(result["paths"]["markdown"])
    assert "| balanced_accuracy |" in report and "McNemar" in report
    assert result["comparison"]["a"]["n"] == len(splits["test"])


# -- the scripts ---------------------------------------------------------------------------------------------------
def load_script(name):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "training", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_FLAGS = [
    "--phantom",
    "--phantom_num_images",
    "120",
    "--phantom_size",
    str(SIZE),
    "--backbone",
    "mobilenet_v3_small",
    "--num_epochs",
    "1",
    "--train_batch_size",
    "16",
    "--patience",
    "0",
    "--n_boot",
    "20",
    "--num_threads",
    "1",
]


def test_adversarial_loop_script(tmp_path, capsys):
    tiny_diffusion().save_pretrained(str(tmp_path / "generator"))
    script = load_script("adversarial_loop")
    with pytest.raises(SystemExit):
        script.parse_args(["--phantom", "--generator", "g", "--strategies", "map,warp"])
    assert "argument --strategies: takes a comma-separated subset of ('map', 'sdedit', 'adversarial'), got ['warp']" \
        in capsys.readouterr().err
    args = script.parse_args(
        TINY_FLAGS
        + [
            "--generator",
            str(tmp_path / "generator"),
            "--rounds",
            "1",
            "--strategies",
            "map,adversarial",
            "--per_case",
            "1",
            "--max_cases",
            "2",
            "--margin",
            "0.5",
            "--num_inference_steps",
            "2",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    result = script.main(args)
    assert os.path.isfile(tmp_path / "out" / "ledger.jsonl") and os.path.isfile(tmp_path / "out" / "report.md")
    assert set(result["rounds"][0]["test"]["per_class"]) == {
        "nevus",
        "melanoma",
        "psoriasis",
        "dermatofibroma",
        "vascular",
    }


def test_augment_experiment_script(tmp_path, capsys):
    """Also the pretrained-backbone path: a local transformers checkpoint folder given as --backbone."""
    from transformers import AutoConfig, AutoModelForImageClassification

    tiny_gan().save_pretrained(str(tmp_path / "generator"))
    torch.manual_seed(0)
    tiny = AutoConfig.for_model("resnet", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    AutoModelForImageClassification.from_config(tiny).save_pretrained(str(tmp_path / "hf"))
    script = load_script("augment_experiment")
    flags = TINY_FLAGS[: TINY_FLAGS.index("--backbone")] + TINY_FLAGS[TINY_FLAGS.index("--backbone") + 2 :]
    for bad, match in (("resnet_18", "did you mean resnet18"), ("no_such_net", "list_models")):
        with pytest.raises(SystemExit):
            script.parse_args(flags + ["--generator", "g", "--backbone", bad])
        assert match in capsys.readouterr().err
    args = script.parse_args(
        flags
        + [
            "--backbone",
            str(tmp_path / "hf"),
            "--generator",
            str(tmp_path / "generator"),
            "--classes",
            "vascular",
            "--num_images",
            "2",
            "--phantom_num_images",  # 5% vascular: 10 images, so the validation split (maps) holds one
            "200",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    result = script.main(args)
    assert result["synthetic"] == {"vascular": 2}
    assert len(os.listdir(tmp_path / "out" / "synthetic" / "images")) == 2
    with open(tmp_path / "out" / "baseline" / "config.json") as handle:
        saved = json.load(handle)
    assert saved["backbone"] == "transformers" and saved["pretrained"] == str(tmp_path / "hf")


def test_splits_with_only_train_and_val_get_mining_and_test_from_train(monkeypatch):
    import argparse

    import dermdiff.data
    from dermdiff.hardcase.cli import load_splits

    data = phantom_dataset(n=100, size=SIZE, seed=1)
    data = data.add_column("split", ["val" if i % 5 == 0 else "train" for i in range(len(data))])
    monkeypatch.setattr(dermdiff.data, "load_any", lambda path, **kwargs: data, raising=False)
    args = argparse.Namespace(phantom=False, data_dir="any", loader_kwargs={}, split_fractions=None, split_seed=0)
    parts = load_splits(args)
    assert list(parts) == ["train", "validation", "mining", "test"]
    assert len(parts["validation"]) == 20 and sum(len(part) for part in parts.values()) == 100
    ids = [set(part["image_id"]) for part in parts.values()]
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    assert len(parts["mining"]) > 5 and len(parts["test"]) > 5


def test_reference_filter_keeps_what_the_reference_recognises():
    from types import SimpleNamespace

    from dermdiff.hardcase.filters import filter_by_reference

    class Reference(MeanColourClassifier):
        config = SimpleNamespace(image_size=8)

        def predict_proba(self, sample):
            return torch.softmax(self(sample) * 10, dim=-1)

    case = phantom_case()
    images = generate_from_maps(
        tiny_gan(), [case.semantic_map] * 2, labels=[0, 1], seeds=[0, 1], source_ids=["b", "r"]
    )
    images[0].image = Image.new("RGB", (SIZE, SIZE), (0, 0, 255))  # blue: class 0 for the reference
    images[1].image = Image.new("RGB", (SIZE, SIZE), (0, 0, 255))  # labelled 1 (red) but blue: not recognised
    kept, dropped = filter_by_reference(images, Reference())
    assert [item.source_id for item in kept] == ["b"] and [item.source_id for item in dropped] == ["r"]
    assert dropped[0].extra["reference_probability"] < 0.5
    kept, dropped = filter_by_reference(images, Reference(), min_probability=0.0)
    assert len(kept) == 2 and not dropped


@pytest.mark.parametrize("name", ["adversarial_loop", "augment_experiment"])
def test_hardcase_data_and_classifier_flags_keep_their_defaults_and_refuse_bad_values(name, capsys):
    """The data flags come from `dermdiff.loops.data_flags` with the hard-case defaults (1000 phantom images);
    a JSON list where an object is needed is one usage line naming the flag, not a traceback."""
    script = load_script(name)
    args = script.parse_args(["--phantom", "--generator", "g"])
    assert (args.phantom_num_images, args.phantom_seed, args.phantom_size, args.split_seed) == (1000, 0, 32, 0)
    assert (args.phantom_rare, args.phantom_rare_fraction, args.stratify_by) == ("melanoma,vascular", 0.05, "")
    assert args.loader_kwargs is None and args.split_fractions is None
    for flag in ("--loader_kwargs", "--split_fractions"):
        with pytest.raises(SystemExit) as stop:
            script.parse_args(["--data_dir", "d", "--generator", "g", flag, "[0.5]"])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"{flag} must be a JSON object, got [0.5]" in err and "Traceback" not in err
    # the classifier flags are ClassifierTrainingConfig fields, validated there
    assert script.classifier_settings(args, 32)["resolution"] == 32 and args.train_batch_size == 32
    with pytest.raises(SystemExit) as stop:
        script.parse_args(["--phantom", "--generator", "g", "--patience", "-1"])
    assert stop.value.code == 2 and "--patience must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        script.parse_args(["--phantom", "--generator", "g", "--num_epochs", "4", "--min_epochs", "5"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--min_epochs must be between 0 and --num_epochs (4), got 5" in err
    assert "Traceback" not in err
    # --n_boot is the config's field (HardCaseConfig / AugmentationConfig), checked by check_n_boot
    assert script.parse_args(["--phantom", "--generator", "g", "--n_boot", "7"]).config.n_boot == 7
    with pytest.raises(SystemExit) as stop:
        script.parse_args(["--phantom", "--generator", "g", "--n_boot", "0"])
    assert stop.value.code == 2 and "--n_boot must be >= 1, got 0" in capsys.readouterr().err


def test_reports_need_one_bootstrap_replicate_at_least():
    from dermdiff.hardcase.augmentation import AugmentationConfig

    for config_cls in (HardCaseConfig, AugmentationConfig):
        with pytest.raises(ValueError, match=r"^n_boot must be >= 1, got 0$"):
            config_cls(n_boot=0)


def test_hardcase_phantom_benchmark_keeps_its_data_defaults():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "hardcase_phantom.py")
    spec = importlib.util.spec_from_file_location("hardcase_phantom_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--generator", "g"])
    assert (args.phantom, args.phantom_num_images, args.phantom_size, args.phantom_seed, args.split_seed) == (
        True, 4000, 32, 0, 0)
    assert (args.phantom_rare, args.phantom_rare_fraction, args.loader_kwargs) == ("melanoma,vascular", 0.05, None)
    # the settings it runs differently from the library (config_args defaults=), also in its --help
    assert (args.config.rounds, args.config.margin, args.config.strategies) == (2, 0.2, ("map", "sdedit", "adversarial"))
    assert (args.config.generation.num_inference_steps, args.config.generation.scheduler) == (25, "ddim")
    assert (args.num_epochs, args.patience, args.balance) == (10, 3, "none")
