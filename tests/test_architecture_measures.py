"""The issue-16 measurement script counts what its docstring says, on a small tree written here."""

import importlib.util
import os
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("architecture_issue16",
                                              os.path.join(ROOT, "benchmarks", "architecture_issue16.py"))
measures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(measures)

LIBRARY = '''
from dataclasses import dataclass

@dataclass
class Settings:
    strength: float = 0.5
    batch_size: int = 4  # beside strength: a generation setting

    def __post_init__(self):
        if not 0 < self.strength <= 1:
            raise ValueError("strength")
        if self.batch_size < 1:
            raise ValueError("batch_size")
        if self.strength > 2:  # a second check in the same place counts once
            raise ValueError("strength")

@dataclass
class CommandSettings(Settings):
    batch_size: int = 8  # re-declared in a subclass of a generation-settings class: counted

@dataclass
class ClassifierConfig:
    batch_size: int = 32  # alone: a classifier's batch, not counted

def sample(pipe, num_inference_steps=50, guidance_scale=None, scheduler=None):
    check_at_least("--steps", num_inference_steps, 1)
    return pipe(num_inference_steps=num_inference_steps)

def train(batch_size=8, lr_scheduler=None):
    assert batch_size > 0
'''
FACE = '''
import argparse

def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=DEFAULTS.num_inference_steps)
    parser.add_argument("--guidance-scale", type=float)
    parser.add_argument("--scheduler", choices=["ddim", "dpm"])
    parser.add_argument("--generation_batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.guidance_scale is not None and args.guidance_scale < 0:
        parser.error("--guidance-scale must be >= 0")
    return args
'''


def test_declarations_and_validations_are_counted_per_place(tmp_path):
    for folder, name, text in (("dermdiff", "settings.py", LIBRARY), ("training", "face.py", FACE),
                               ("tests", "test_x.py", LIBRARY)):
        os.makedirs(tmp_path / folder, exist_ok=True)
        (tmp_path / folder / name).write_text(textwrap.dedent(text))
    sites = measures.setting_sites(str(tmp_path))

    def kinds(setting, key):
        return sorted(kind for kind, _ in sites[setting][key])

    assert kinds("strength", "declared") == ["dataclass field"]
    assert kinds("strength", "validated") == ["if ...: raise"]  # two checks in __post_init__: one place
    assert kinds("batch_size", "declared") == ["argparse flag", "dataclass field", "dataclass field"]  # not
    # ClassifierConfig's or train()'s, but CommandSettings' re-declaration
    assert kinds("batch_size", "validated") == ["if ...: raise"]  # the assert in train() is not a generation site
    assert kinds("num_inference_steps", "declared") == ["argparse flag", "keyword default"]  # --steps by its default
    assert kinds("num_inference_steps", "validated") == ["check_at_least()"]
    assert kinds("guidance_scale", "validated") == ["if ...: raise"]  # parser.error
    assert kinds("scheduler", "declared") == ["argparse flag", "keyword default"]
    assert kinds("scheduler", "validated") == ["flag choices"]
    assert [where for _, where in sites["strength"]["declared"]] == ["dermdiff/settings.py:6"]  # tests/ not read


def test_folder_sizes_count_python_files_and_lines(tmp_path):
    (tmp_path / "dermdiff" / "data").mkdir(parents=True)
    (tmp_path / "dermdiff" / "a.py").write_text("x = 1\ny = 2\n")
    (tmp_path / "dermdiff" / "data" / "b.py").write_text("z = 3\n")
    (tmp_path / "dermdiff" / "notes.md").write_text("not code\n")
    sizes = measures.folder_sizes(str(tmp_path))
    assert sizes["dermdiff/ (top level)"] == (1, 2) and sizes["dermdiff/data/"] == (1, 1)
    assert sizes["dermdiff/ (all)"] == (2, 3) and sizes["tests/"] == (0, 0)
