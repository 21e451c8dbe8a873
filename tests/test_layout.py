"""The package layout works from a source checkout and as installed: every package is listed for setup."""

import configparser
import os
import subprocess
import sys

import dermdiff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_folder_is_listed_in_setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    listed = set(parser["options"]["packages"].split())
    found = {"dermdiff.pipelines"}
    for folder, _, files in os.walk(os.path.join(ROOT, "dermdiff")):
        if "__init__.py" in files and "__pycache__" not in folder:
            found.add(os.path.relpath(folder, ROOT).replace(os.sep, "."))
    assert found == listed, f"setup.cfg [options] packages must list exactly {sorted(found)}"


def test_pipelines_import_as_dermdiff_pipelines_in_a_fresh_process():
    code = "import dermdiff.pipelines as p, dermdiff; print(p.__name__, dermdiff.pipelines is p)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["dermdiff.pipelines", "True"]


def test_console_script_lists_subcommands():
    from dermdiff.cli import build_parser

    help_text = build_parser().format_help()
    for command in ("maps",):
        assert command in help_text
    assert dermdiff.__version__


def test_moved_modules_keep_their_old_import_paths_for_one_release():
    """Issue 16 moved the hard-case modules into dermdiff/hardcase/ and the classifier loop into loops/."""
    code = """
import warnings
warnings.simplefilter("error", DeprecationWarning)
import dermdiff
from dermdiff.moved import MOVED
for old, new in MOVED.items():
    try:
        __import__(old)
    except DeprecationWarning as warning:
        assert new[0] in str(warning), (old, str(warning))
    else:
        raise AssertionError(old + " imported without a DeprecationWarning")
warnings.simplefilter("ignore", DeprecationWarning)
from dermdiff.synthesis import derive_seed, filter_by_distance, write_synthetic
from dermdiff.mining import Ledger
from dermdiff.augmentation import AugmentationConfig
from dermdiff.hardcase_cli import load_splits
from dermdiff.classifier_training import _EarlyStopping, train_classifier
from dermdiff.hardcase import HardCaseConfig, report_markdown, run_hardcase_loop, seed_control_markdown
import dermdiff.hardcase.filters, dermdiff.hardcase.loop, dermdiff.hardcase.synthesis, dermdiff.loops.classifier
assert write_synthetic is dermdiff.data.synthetic_folder.write_synthetic
assert filter_by_distance is dermdiff.hardcase.filters.filter_by_distance
assert derive_seed is dermdiff.hardcase.synthesis.derive_seed
assert train_classifier is dermdiff.loops.classifier.train_classifier
assert run_hardcase_loop is dermdiff.hardcase.loop.run_hardcase_loop is dermdiff.run_hardcase_loop
print("ok", len(MOVED))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "5"]


def test_every_template_and_static_file_is_package_data():
    """An installed dermdiff renders its reports: each file the code reads at run time is in setup.cfg."""
    import fnmatch

    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    patterns = {package: [p.strip() for p in value.split(",")] for package, value in parser["options.package_data"].items()}
    missing = []
    for folder, _, files in os.walk(os.path.join(ROOT, "dermdiff")):
        relative = os.path.relpath(folder, ROOT).split(os.sep)
        if not {"templates", "static"} & set(relative):
            continue
        for name in files:
            path = os.path.join(folder, name)
            package_dir = os.path.dirname(folder)
            package = os.path.relpath(package_dir, ROOT).replace(os.sep, ".")
            inside = os.path.relpath(path, package_dir).replace(os.sep, "/")
            if not any(fnmatch.fnmatch(inside, pattern) for pattern in patterns.get(package, [])):
                missing.append(os.path.relpath(path, ROOT))
    assert not missing, f"add these to setup.cfg [options.package_data]: {missing}"
