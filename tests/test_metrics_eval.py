"""Evaluation package: FID/KID, intervals, reference cache, fidelity, memorisation, the report.

Everything runs on a tiny seeded conv net as feature extractor and on the procedural phantom, so the whole
file takes seconds on a CPU.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dermdiff.conditions import get_registry
from dermdiff.metrics.features import FeatureExtractor
from dermdiff.metrics.fid import (
    compute_fid_kid,
    fast_fid,
    fid_between_folders,
    fid_from_features,
    fid_with_ci,
    kid_with_ci,
)
from dermdiff.pipelines.generation_settings import GenerationSettings


class TinyFeatures(FeatureExtractor):
    """A small random conv net (seeded) with a counter of images seen, to prove cache hits."""

    def __init__(self, resolution: int = 32):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.name, self.resolution, self.images_seen = "tiny-test-net", resolution, 0

    def forward(self, x):
        self.images_seen += x.shape[0]
        return self.net(x / 127.5 - 1.0)


def _write_noise_folder(path, n, mean, seed, size=24):
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        array = np.clip(rng.normal(mean, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(os.path.join(path, f"{i:03d}.png"))
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    return {
        "a": _write_noise_folder(root / "a", 40, 120, seed=0),
        "b": _write_noise_folder(root / "b", 40, 120, seed=1),
        "shifted": _write_noise_folder(root / "shifted", 40, 180, seed=2),
        "root": str(root),
    }


# ------------------------------------------------------------------------------------------------------------
# FID / KID
# ------------------------------------------------------------------------------------------------------------
def test_fid_against_itself_is_zero_and_shift_is_positive(folders):
    extractor = TinyFeatures()
    same = compute_fid_kid(folders["a"], folders["a"], extractor, cache_dir=None, trials=5, verbose=False)
    other = compute_fid_kid(folders["b"], folders["a"], extractor, cache_dir=None, trials=5, verbose=False)
    shifted = compute_fid_kid(folders["shifted"], folders["a"], extractor, cache_dir=None, trials=5, verbose=False)
    assert abs(same["fid"]["value"]) < 1e-8
    assert shifted["fid"]["value"] > 20 * other["fid"]["value"] > 0
    assert shifted["kid"]["value"] > 10 * abs(other["kid"]["value"])
    assert shifted["extractor"]["name"] == "tiny-test-net"
    # our folder path gives clean-fid's own compute_fid number with the same extractor
    assert shifted["fid"]["value"] == pytest.approx(fid_between_folders(folders["shifted"], folders["a"], extractor),
                                                    rel=1e-6)


@pytest.mark.parametrize("n1,n2,dim", [(30, 40, 64), (200, 150, 16)])
def test_fast_fid_matches_cleanfid(n1, n2, dim):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n1, dim)), rng.normal(0.2, 1.3, size=(n2, dim))
    assert fast_fid(x, y) == pytest.approx(fid_from_features(x, y), rel=1e-5)


def test_kid_is_unbiased_for_one_distribution():
    rng = np.random.default_rng(0)
    same = [kid_with_ci(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)), subsets=1, seed=i)["value"]
            for i in range(40)]
    standard_error = np.std(same, ddof=1) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 3 * standard_error
    assert min(same) < 0  # an unbiased estimator of a zero MMD must go negative sometimes
    shifted = kid_with_ci(rng.normal(size=(60, 8)), rng.normal(0.5, 1, size=(60, 8)), subsets=20)
    assert shifted["value"] > 10 * standard_error


def test_fid_interval_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 400):
        result = fid_with_ci(rng.normal(size=(n, 8)), rng.normal(0.3, 1, size=(n, 8)), trials=30)
        widths.append(result["ci95"])
        assert result["trials"] == 30 and result["subset_size"] == [n // 2, n // 2]
    assert widths[1] < 0.6 * widths[0]


def test_reference_statistics_cache_skips_the_reference_pass(folders, tmp_path):
    extractor = TinyFeatures()
    first = compute_fid_kid(folders["b"], folders["a"], extractor, cache_dir=str(tmp_path), trials=3, verbose=False)
    assert first["reference_cache"]["hit"] is False and extractor.images_seen == 80
    second = compute_fid_kid(folders["b"], folders["a"], extractor, cache_dir=str(tmp_path), trials=3, verbose=False)
    assert second["reference_cache"]["hit"] is True
    assert extractor.images_seen == 120  # only the 40 generated images were extracted again
    assert second["fid"]["value"] == pytest.approx(first["fid"]["value"], rel=1e-5)
    # another resolution is another key
    third = compute_fid_kid(folders["b"], folders["a"], extractor, cache_dir=str(tmp_path), resolution=16, trials=3,
                            verbose=False)
    assert third["reference_cache"]["hit"] is False
    assert third["reference_cache"]["path"] != first["reference_cache"]["path"]


def test_pipeline_source_is_seeded_and_batch_size_independent():
    from dermdiff.metrics.fid import source_features
    from dermdiff.metrics.sources import PipelineSource
    from dermdiff.semantic_map import SemanticMap

    class FakePipeline:
        """Colour = noise from each image's own generator, shifted by the map's skin type."""

        def __call__(self, semantic_map, generator, num_inference_steps, output_type):
            assert output_type == "pil" and len(generator) == len(semantic_map)
            images = []
            for smap, gen in zip(semantic_map, generator):
                noise = torch.rand(16, 16, 3, generator=gen).numpy()
                images.append(Image.fromarray((noise * 100 + 20 * smap.skin_type).astype(np.uint8)))
            return type("Output", (), {"images": images})()

    maps = [SemanticMap.from_annotations("mel", skin_type=t, boxes=[(2, 2, 8, 8)], size=16) for t in (1, 6)]
    settings = [GenerationSettings(num_inference_steps=2, batch_size=b) for b in (1, 4)]
    features = [source_features(PipelineSource(FakePipeline(), 6, maps=maps, settings=s), TinyFeatures(),
                                verbose=False)[0] for s in settings]
    np.testing.assert_allclose(features[0].features, features[1].features, rtol=1e-5)
    assert features[0].skin_types.tolist() == [1, 6, 1, 6, 1, 6] and set(features[0].labels) == {"mel"}
    with pytest.raises(ValueError, match="num_images"):
        PipelineSource(FakePipeline(), 1)
    with pytest.raises(TypeError, match=r"takes batch_size, num_inference_steps inside settings=GenerationSettings"):
        PipelineSource(FakePipeline(), 6, maps=maps, batch_size=4, num_inference_steps=2)


def test_inception_missing_weights_fail_with_instructions(tmp_path, monkeypatch):
    from dermdiff.metrics import features

    monkeypatch.setenv(features.INCEPTION_ENV, str(tmp_path))
    monkeypatch.setattr(features, "cleanfid_inception_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt") as error:
        features.load_extractor("inception")
    assert "never downloads" in str(error.value) and features.INCEPTION_URL in str(error.value)
    assert "--extractor inception:DIR" in str(error.value) and "--inception-dir" not in str(error.value)


def test_inception_loads_from_a_local_file_without_download(tmp_path, monkeypatch):
    """A stand-in torchscript file with clean-fid's layout (`layers`, pool3 2048-d) is found and used as is."""
    from cleanfid import downloads_helper

    from dermdiff.metrics import features

    class FakeInception(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Conv2d(3, 4, 8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(4, 2048))

        def forward(self, x, return_features: bool = False):
            return self.layers(x)

    torch.jit.script(FakeInception()).save(str(tmp_path / features.INCEPTION_FILENAME))
    with pytest.raises(ValueError, match="is not clean-fid's Inception") as refused:
        features.load_extractor(f"inception:{tmp_path}")
    assert features.INCEPTION_ENV in str(refused.value) and "--extractor inception:DIR" in str(refused.value)
    fake_digest = hashlib.sha256((tmp_path / features.INCEPTION_FILENAME).read_bytes()).hexdigest()
    monkeypatch.setattr(features, "INCEPTION_SHA256", fake_digest)  # accepted once it is the expected file

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(downloads_helper.urllib.request, "urlopen", no_download)
    extractor = features.load_extractor(f"inception:{tmp_path}")
    assert extractor.resolution == 299 and extractor.describe()["weights"].startswith(str(tmp_path))
    assert extractor(torch.full((2, 3, 299, 299), 128.0)).shape == (2, 2048)


def test_torchvision_and_classifier_extractors(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from dermdiff.classifier import SkinClassifier
    from dermdiff.metrics.features import ClassifierFeatures, TorchvisionFeatures, load_extractor

    with pytest.raises(ValueError, match="random_init"):
        TorchvisionFeatures("mobilenet_v3_small")
    with pytest.raises(ValueError, match="same features for every image"):
        load_extractor("torchvision:mobilenet_v3_small:random", resolution=32)
    random = load_extractor("torchvision:resnet18:random", resolution=32)
    assert random.describe()["random_init"] and "RANDOM" in random.name
    assert random(torch.rand(3, 3, 32, 32) * 255).std(0).mean() > 1e-3
    torch.manual_seed(1)
    weights = str(tmp_path / "mobilenet_v3_small.safetensors")
    save_file(torchvision.models.mobilenet_v3_small().state_dict(), weights)
    local = load_extractor(f"torchvision:mobilenet_v3_small:{weights}", resolution=32)
    assert not local.describe()["random_init"] and local(torch.full((2, 3, 32, 32), 128.0)).shape == (2, 1024)

    SkinClassifier(backbone="mobilenet_v3_small", num_labels=2, image_size=32).save_pretrained(str(tmp_path / "clf"))
    domain = ClassifierFeatures(str(tmp_path / "clf"))
    assert domain.resolution == 32 and domain.name.startswith("domain-mobilenet_v3_small")
    assert domain(torch.full((2, 3, 32, 32), 128.0)).shape == (2, 1024)


# ------------------------------------------------------------------------------------------------------------
# fidelity
# ------------------------------------------------------------------------------------------------------------
def test_ita_of_flat_colours_matches_the_formula():
    from skimage.color import rgb2lab

    from dermdiff.metrics.fidelity import segment_lesion, skin_ita

    for rgb in [(235, 200, 180), (200, 150, 120), (140, 95, 70), (70, 45, 35)]:
        lab = rgb2lab(np.array([[rgb]], dtype=np.float64) / 255.0)[0, 0]
        expected = np.degrees(np.arctan((lab[0] - 50.0) / lab[2]))
        image = Image.new("RGB", (16, 16), rgb)
        assert not segment_lesion(image).any()  # flat skin: no lesion found
        assert skin_ita(image) == pytest.approx(expected, abs=1e-6)


def test_placement_iou_on_phantom_ground_truth():
    from dermdiff.data.phantom import generate_phantom_sample
    from dermdiff.metrics.fidelity import box_iou, mask_iou, placement_scores

    samples = [generate_phantom_sample(c, t, size=64, seed=3, index=i)
               for i, (c, t) in enumerate((c, t) for c in ("nevus", "melanoma", "psoriasis") for t in (1, 3, 5))]
    images, maps = [s.image for s in samples], [s.semantic_map for s in samples]
    scores = placement_scores(images, maps)
    assert scores["overall"]["n"] == 9 and scores["overall"]["iou_mask"] > 0.75
    assert set(scores["per_condition"]) == {"nevus", "melanoma", "psoriasis"}
    # the same images judged against other samples' maps (lesions elsewhere) score far lower
    assert placement_scores(images, maps[1:] + maps[:1])["overall"]["iou_mask"] < 0.5 * scores["overall"]["iou_mask"]
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    assert box_iou((0, 0, 4, 4), (2, 0, 6, 4)) == pytest.approx(1 / 3)


def test_class_fidelity_per_requested_condition(tmp_path):
    from dermdiff.classifier import SkinClassifier
    from dermdiff.metrics.fidelity import class_fidelity

    images = [Image.new("RGB", (16, 16), (200, 150, 120))] * 5
    requested = ["nevus", "nevus", "melanoma", "melanoma", "psoriasis"]

    def always_nevus(batch):
        return ["nevus"] * len(batch)

    result = class_fidelity(images, requested, always_nevus)
    assert result["per_condition"]["nevus"]["accuracy"] == 1.0
    assert result["per_condition"]["melanoma"] == {"n": 2, "accuracy": 0.0, "predicted": {"nevus": 2}}
    assert result["overall"] == {"n": 5, "accuracy": 0.4}
    torch.manual_seed(0)
    model = SkinClassifier(backbone="resnet18", num_labels=2, label_names=["nevus", "melanoma"], image_size=16)
    result = class_fidelity(images, requested, model)
    assert result["not_in_classifier"] == ["psoriasis"] and result["overall"]["n"] == 4


def test_size_sweep_numbers_follow_drawn_discs():
    from dermdiff.metrics.fidelity import size_sweep_scores
    from dermdiff.semantic_map import SemanticMap

    yy, xx = np.mgrid[:48, :48]
    images, maps = [], []
    for radius in (4, 7, 10, 14):
        disc = (yy - 24) ** 2 + (xx - 24) ** 2 < radius ** 2
        array = np.full((48, 48, 3), (205, 160, 135), np.uint8)
        array[disc] = (90, 50, 40)
        images.append(Image.fromarray(array))
        maps.append(SemanticMap.from_annotations("nevus", 2, mask=disc, registry="phantom"))
    scores = size_sweep_scores(images, maps, factors=[0.5, 1.0, 1.5, 2.0])
    assert scores["spearman"] == pytest.approx(1.0)
    assert min(row["iou_mask"] for row in scores["rows"]) > 0.8


# ------------------------------------------------------------------------------------------------------------
# memorisation
# ------------------------------------------------------------------------------------------------------------
def test_memorisation_finds_a_planted_copy():
    from dermdiff.data.phantom import generate_phantom_sample
    from dermdiff.metrics.memorisation import nearest_neighbours, plot_nearest_pairs

    training = [generate_phantom_sample("nevus", 1 + i % 6, size=32, seed=0, index=i).image for i in range(60)]
    generated = [generate_phantom_sample("nevus", 1 + i % 6, size=32, seed=7, index=i).image for i in range(10)]
    generated[4] = training[37]
    result = nearest_neighbours(generated, training, k=3, extractor=TinyFeatures(), size=32, ssim_threshold=0.95,
                                verbose=False)
    planted = result["pairs"][4]
    assert planted["flagged"] and planted["ssim"]["train_index"] == 37 and planted["mse"]["train_index"] == 37
    assert planted["feature"]["train_index"] == 37 and planted["ssim"]["value"] == pytest.approx(1.0)
    assert result["num_flagged"] == 1 and result["share_flagged"] == pytest.approx(0.1)
    picture = plot_nearest_pairs(result, generated, training, top=3)
    assert picture.size == (4 * (96 + 4), 3 * (96 + 14 + 4))
    # row 0 is the planted copy (SSIM 1): generated | nearest by SSIM, each below its 14 px caption
    pixels = np.asarray(picture)
    expected = np.asarray(generated[4].convert("RGB").resize((96, 96), Image.NEAREST))
    assert np.array_equal(pixels[14 : 14 + 96, :96], expected)
    assert np.array_equal(pixels[14 : 14 + 96, 100 : 100 + 96], expected)  # training[37] is the same picture
    assert (pixels[:, 96:100] == 255).all()  # the white gap between columns


# ------------------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------------------
def test_report_renders_all_sections(tmp_path):
    from dermdiff.data.phantom import generate_phantom_sample, write_phantom
    from dermdiff.metrics.evaluation import evaluate
    from dermdiff.metrics.generated import write_generated_set
    from dermdiff.metrics.report import SECTIONS

    real = write_phantom(str(tmp_path / "real"), n=48, size=32, seed=0)
    samples = [generate_phantom_sample(("nevus", "melanoma", "psoriasis")[i % 3], 1 + i % 6, size=32, seed=9, index=i)
               for i in range(24)]
    smap = samples[0].semantic_map
    sweeps = [
        {"kind": "skin_type", "id": 0, "values": list(range(1, 7)), "maps": smap.skin_type_sweep(),
         "images": [generate_phantom_sample("nevus", t, size=32, seed=3).image for t in range(1, 7)]},
        {"kind": "size", "id": 0, "values": [0.5, 1.0, 1.5], "maps": smap.size_sweep([0.5, 1.0, 1.5]),
         "images": [samples[0].image] * 3},
    ]
    write_generated_set(str(tmp_path / "gen"), [s.image for s in samples], [s.semantic_map for s in samples],
                        "phantom", sweeps)
    log = [{"step": s, "d_train": 0.5 + s / 200, "d_heldout": 0.5 - s / 400} for s in range(0, 100, 20)]
    out = tmp_path / "report"
    metrics = evaluate(data=real, out=str(out), generated=str(tmp_path / "gen"), extractor=TinyFeatures(),
                       cache_dir=str(tmp_path / "cache"), trials=5, min_group_size=4, gan_log=log, verbose=False)
    html = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    for figure in ("samples", "fid_per_class", "nearest_pairs", "sweep_skin_type_0", "sweep_size_0",
                   "discriminator_gap"):
        assert (out / "figures" / f"{figure}.png").is_file() and f"figures/{figure}.png" in html
    stored = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN became null
    assert stored["distribution"]["extractor"]["name"] == "tiny-test-net"
    assert stored["distribution"]["num_generated"] == 24 and stored["settings"]["samples"] == 24
    assert metrics["fidelity"]["placement"]["overall"]["iou_mask"] > 0.7
    assert metrics["fidelity"]["skin_tone"]["overall"]["band_accuracy"] > 0.8
    assert metrics["sweeps"]["skin_type"][0]["monotonic"] is True
    assert metrics["memorisation"]["num_flagged"] == 0
    assert metrics["discriminator_gap"] == {"D": pytest.approx(0.6)}  # last step 80: 0.9 - 0.3


def test_evaluate_samples_from_a_saved_pipeline(tmp_path):
    from diffusers import DDPMScheduler

    from dermdiff import DermDiffPipeline, SemanticUNet2DModel
    from dermdiff.data.phantom import write_phantom
    from dermdiff.metrics.evaluation import evaluate
    from dermdiff.metrics.generated import read_generated_set

    torch.manual_seed(0)
    unet = SemanticUNet2DModel(sample_size=16, block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=4,
                               **get_registry("phantom").model_kwargs(),
                               down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                               up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    pipe = DermDiffPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100))
    pipe.save_pretrained(str(tmp_path / "pipe"))
    real = write_phantom(str(tmp_path / "real"), n=16, size=16, seed=0)
    metrics = evaluate(data=real, out=str(tmp_path / "out"), pipeline=str(tmp_path / "pipe"), num_images=8,
                       generation=GenerationSettings(num_inference_steps=2), extractor=TinyFeatures(16), cache_dir=None,
                       trials=3, min_group_size=2,
                       verbose=False)
    assert metrics["settings"]["resolution"] == 16 and metrics["distribution"]["num_generated"] == 8
    written = read_generated_set(str(tmp_path / "out" / "generated"))
    assert len(written.samples()[0]) == 8
    assert [sweep["values"] for sweep in written.sweeps("skin_type")] == [[1, 2, 3, 4, 5, 6]]
    assert len(metrics["sweeps"]["size"][0]["rows"]) == 5
    assert (tmp_path / "out" / "report.html").is_file()


def test_discriminator_gap_plot_checks_its_log():
    from dermdiff.metrics.report import plot_discriminator_gap

    with pytest.raises(ValueError, match="d_heldout"):
        plot_discriminator_gap([{"step": 0, "d_train": 0.9}])
    figure = plot_discriminator_gap([{"step": 1, "d_train": 0.8, "d_heldout": 0.4}, {"step": 0, "d_train": 0.6,
                                                                                   "d_heldout": 0.5}])
    assert len(figure.axes[0].lines) == 4  # train, held out, gap, zero line


def test_evaluate_command_bad_input_exits_2(tmp_path, capsys):
    from dermdiff.cli import main

    code = main(["evaluate", "--generated", str(tmp_path), "--data", str(tmp_path), "--out",
                 str(tmp_path / "out"), "--extractor", "nonsense"])
    assert code == 2 and "unknown extractor" in capsys.readouterr().err
