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
