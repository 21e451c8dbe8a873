"""`load_pipeline`: one loader for every pipeline kind, from folders and Hub ids, with one-line errors."""

from __future__ import annotations

import pytest
import test_gan_pipelines as gan_suites  # a module name, so pytest does not collect its suites twice
import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler
from test_pipeline_dermdiff import tiny_pipeline
from test_pipeline_latent import latent_pipeline

from dermdiff.errors import UsageError
from dermdiff.hardcase.cli import GENERATOR_KINDS, load_generator
from dermdiff.pipelines import DermGANPipeline, load_pipeline


def _conformance_pipeline(suite):
    return suite.pipeline_class(**suite().get_dummy_components())


BUILDERS = {
    "dermdiff": tiny_pipeline,
    "dermdiff_with_vae": latent_pipeline,
    "dermgan": lambda: _conformance_pipeline(gan_suites.TestDermGANConformance),
    "dcgan": lambda: _conformance_pipeline(gan_suites.TestDCGANConformance),
    "lesion_edit": lambda: _conformance_pipeline(gan_suites.TestLesionEditConformance),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_kind_loads_from_its_folder_with_its_weights(tmp_path, kind):
    pipe = BUILDERS[kind]()
    pipe.save_pretrained(tmp_path / kind)
    loaded = load_pipeline(str(tmp_path / kind))
    assert type(loaded) is type(pipe)
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            for (key, value), (_, other) in zip(component.state_dict().items(), getattr(loaded, name).state_dict().items()):
                assert torch.equal(value, other), (name, key)


def test_kinds_scheduler_and_folder_errors(tmp_path):
    _conformance_pipeline(gan_suites.TestDCGANConformance).save_pretrained(tmp_path / "dcgan")
    with pytest.raises(UsageError, match="holds a DCGANPipeline; this needs a DermDiffPipeline or a DermGANPipeline"):
        load_generator(str(tmp_path / "dcgan"))
    with pytest.raises(ValueError, match="--scheduler 'ddim': DCGANPipeline has no scheduler"):
        load_pipeline(str(tmp_path / "dcgan"), scheduler="ddim")
    tiny_pipeline().save_pretrained(tmp_path / "diffusion")
    pipe = load_generator(str(tmp_path / "diffusion"), scheduler="dpm")
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler) and pipe._progress_bar_config == {"disable": True}
    with pytest.raises(FileNotFoundError, match="nowhere is not a saved pipeline folder"):
        load_pipeline(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"unknown pipeline kinds \['StableDiffusionPipeline'\]"):
        load_pipeline(str(tmp_path / "diffusion"), kinds=("StableDiffusionPipeline",))


def test_hub_ids_take_the_class_from_the_hub_index(monkeypatch):
    index = {"_class_name": ["dermdiff_pipeline", "DermGANPipeline"]}
    monkeypatch.setattr(DiffusionPipeline, "load_config", classmethod(lambda cls, hub_id, **kwargs: dict(index)))
    built = _conformance_pipeline(gan_suites.TestDermGANConformance)
    calls = []

    def from_hub(cls, hub_id, **kwargs):
        calls.append((cls.__name__, hub_id, kwargs))
        return built

    monkeypatch.setattr(DermGANPipeline, "from_pretrained", classmethod(from_hub))
    assert load_generator("someone/dermgan") is built
    assert calls == [("DermGANPipeline", "someone/dermgan", {"use_safetensors": True})]
    index["_class_name"] = "DCGANPipeline"
    with pytest.raises(UsageError, match="someone/dcgan holds a DCGANPipeline; this needs a DermDiffPipeline"):
        load_pipeline("someone/dcgan", kinds=GENERATOR_KINDS)

    def offline(cls, hub_id, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line")

    monkeypatch.setattr(DiffusionPipeline, "load_config", classmethod(offline))
    with pytest.raises(ValueError, match=r"^could not load pipeline 'someone/x': .*OSError: We couldn't connect[^\n]*$"):
        load_pipeline("someone/x")
