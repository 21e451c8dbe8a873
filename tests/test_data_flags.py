"""Every trainer's --train_data_dir reads every loader layout, and --train_split keeps one make_splits part."""

from __future__ import annotations

import argparse
import json

import pytest
from test_data import good_rows, write_dermamnist, write_folder, write_ham, write_pad
from test_train_diffusion import reset_accelerate, script, weights

from dermdiff.data import load_ham10000, make_splits
from dermdiff.loops.data_flags import add_data_source_arguments, check_data_source_args, load_training_rows


def parse(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_source_arguments(parser)
    args = parser.parse_args(list(argv))
    check_data_source_args(parser, args)
    return args


def layout(kind: str, root) -> str:
    if kind == "ham10000":
        return write_ham(str(root / "ham"), n=20)[0]
    if kind == "pad_ufes20":
        return write_pad(str(root / "pad"))
    if kind == "dermamnist":
        return write_dermamnist(root / "derma.npz")[0]
    return write_folder(str(root / "folder"), good_rows())


@pytest.mark.parametrize("kind, count, names", [
    ("ham10000", 20, 7), ("pad_ufes20", 8, 4), ("dermamnist", 10, 7), ("imagefolder", 3, 2),
])
def test_every_layout_loads_at_the_resolution(tmp_path, kind, count, names):
    rows = load_training_rows(parse("--train_data_dir", layout(kind, tmp_path), "--resolution", "16"))
    assert len(rows.train) == count  # DermaMNIST: its own train split (val rows held out)
    assert len(rows.registry.names) >= names and rows.train[0]["image"].size == (16, 16)
    if kind == "dermamnist":
        assert len(rows.heldout) == 5 and set(rows.heldout["split"]) == {"val"}


def test_train_split_is_exactly_the_make_splits_part(tmp_path):
    root = layout("ham10000", tmp_path)
    rows = load_training_rows(parse("--train_data_dir", root, "--resolution", "16", "--train_split", "train",
                                    "--split_seed", "3"))
    expected = make_splits(load_ham10000(root, size=16), seed=3)
    assert rows.train["image_id"] == expected["train"]["image_id"]
    if len(expected["validation"]):
        assert rows.heldout["image_id"] == expected["validation"]["image_id"]
    else:
        assert rows.heldout is None
    test = load_training_rows(parse("--train_data_dir", root, "--train_split", "test", "--split_seed", "3"))
    assert test.train["image_id"] == expected["test"]["image_id"]
    assert not set(rows.train["lesion_id"]) & set(test.train["lesion_id"])  # lesion-grouped
    everything = load_training_rows(parse("--train_data_dir", root, "--train_split", "all"))
    assert len(everything.train) == 20 and everything.heldout is None


def test_a_datasets_own_split_column_names_the_parts(tmp_path):
    npz = layout("dermamnist", tmp_path)
    assert len(load_training_rows(parse("--train_data_dir", npz, "--train_split", "val")).train) == 5
    with pytest.raises(ValueError, match=r"--train_split 'mining' is not a split of derma.npz; its splits: "
                                         r"\['train', 'val', 'all'\]"):
        load_training_rows(parse("--train_data_dir", npz, "--train_split", "mining"))


@pytest.mark.parametrize("argv, message", [
    (["--train_data_dir", "x", "--loader_kwargs", "{bad"], "--loader_kwargs is not JSON"),
    (["--train_data_dir", "x", "--loader_kwargs", "[1]"], "--loader_kwargs must be a JSON object"),
    (["--phantom", "--loader_kwargs", "{}"], "--loader_kwargs applies to --train_data_dir only"),
    (["--phantom", "--train_data_dir", "x"], "give exactly one of --train_data_dir, --dataset_name, --phantom"),
])
def test_bad_data_flags_exit_2_with_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        parse(*argv)
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_loader_options_pass_through_and_a_wrong_one_is_named(tmp_path):
    root = layout("ham10000", tmp_path)
    assert len(load_training_rows(parse("--train_data_dir", root, "--loader_kwargs", '{"limit": 6}')).train) == 6
    with pytest.raises(ValueError, match=r"loader option\(s\) \['colour'\] do not apply to .* \(ham10000 layout\)"):
        load_training_rows(parse("--train_data_dir", root, "--loader_kwargs", json.dumps({"colour": 1})))


def test_diffusion_trains_on_the_train_part_of_ham10000(tmp_path, model_config):
    root = layout("ham10000", tmp_path)
    reset_accelerate()
    args = script.parse_args([
        "--train_data_dir", root, "--train_split", "train", "--resolution", "16", "--train_batch_size", "4",
        "--model_config", model_config, "--output_dir", str(tmp_path / "run"), "--max_train_steps", "1",
        "--lr_warmup_steps", "1", "--validation_steps", "0", "--report_to", "none", "--augment", "dihedral",
    ])  # fmt: skip
    train, _, registry, _ = script.load_datasets(args)
    assert len(train) == len(make_splits(load_ham10000(root), seed=0)["train"]) < 20
    assert script.main(args) == 0 and weights(tmp_path / "run" / "unet")
    assert json.loads((tmp_path / "run" / "unet" / "config.json").read_text())["conditions"] == list(registry.names)


def test_gan_scripts_load_through_the_same_flags(tmp_path):
    from dermdiff.loops.gan_cli import add_data_arguments, check_common_args, load_train_images

    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    parser.add_argument("--model_config", default=None)
    args = parser.parse_args(["--train_data_dir", layout("pad_ufes20", tmp_path), "--train_split", "all"])
    check_common_args(parser, args)
    rows, registry, name = load_train_images(args)
    assert len(rows) == 8 and name == "pad" and registry.names


@pytest.fixture
def model_config(tmp_path):
    from test_train_diffusion import TINY_MODEL

    path = tmp_path / "tiny_unet.json"
    path.write_text(json.dumps(TINY_MODEL))
    return str(path)
