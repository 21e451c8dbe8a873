"""Unknown skin types are estimated from the images (ITA of the skin around the lesion) and written into the maps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_data import good_rows, write_folder
from test_data_flags import parse

from dermdiff.data import estimate_skin_types, load_any, phantom_dataset, registry_of
from dermdiff.data.skin_types import estimated_skin_type, skin_type_counts
from dermdiff.loops.data_flags import load_training_rows
from dermdiff.semantic_map import SemanticMap

LIGHT, BROWN = (224, 172, 140), (141, 85, 54)  # ITA 45.6 (type II) and type V (dermdiff.skin_tone's example)


def photo(colour, size=32, field=None):
    """Uniform skin; with `field`, black outside a centred disc of that radius (a dermatoscope's field of view)."""
    array = np.empty((size, size, 3), dtype=np.uint8)
    array[:] = colour
    if field:
        yy, xx = np.mgrid[:size, :size]
        array[np.hypot(yy - size / 2, xx - size / 2) > field] = 0
    return Image.fromarray(array)


def test_the_skin_outside_the_lesion_and_the_vignette_decides():
    assert estimated_skin_type(photo(LIGHT)) == 2 and estimated_skin_type(photo(BROWN)) == 5
    vignetted = photo(LIGHT, field=0.35 * 32)
    assert (np.asarray(vignetted).sum(-1) == 0).mean() > 0.55  # most of the frame is black: it would win a median
    assert estimated_skin_type(vignetted) == 2  # the black ring is not read as type VI skin
    lesion = np.zeros((32, 32), dtype=bool)
    lesion[4:28, 4:28] = True  # most of the frame is a dark lesion on light skin
    array = np.asarray(photo(LIGHT)).copy()
    array[lesion] = BROWN
    assert estimated_skin_type(array) == 5  # without the mask the lesion wins the median
    assert estimated_skin_type(array, lesion) == 2
    assert estimated_skin_type(photo(LIGHT), np.ones((32, 32), dtype=bool)) is None  # no skin left to measure
    with pytest.raises(ValueError, match=r"lesion mask has shape \(8, 8\), the image \(height, width\) \(32, 32\)"):
        estimated_skin_type(photo(LIGHT), np.zeros((8, 8), dtype=bool))


def test_big_photos_are_measured_on_a_small_copy():
    big = photo(BROWN, size=600, field=210)
    lesion = np.zeros((600, 600), dtype=bool)
    lesion[200:400, 200:400] = True
    assert estimated_skin_type(big, lesion) == 5


def without_skin_types(rows):
    registry = registry_of(rows)

    def forget(row):
        smap = SemanticMap.decode(row["semantic_map"], registry).with_skin_type(None)
        return {**row, "skin_type": None, "semantic_map": smap.to_pil()}

    return rows.map(forget, features=rows.features)


def test_the_phantom_skin_types_are_recovered_from_its_pixels():
    """The phantom draws each skin type inside its ITA band, so the estimate must find the type it was given."""
    rows = phantom_dataset(n=42, size=32, seed=0)
    truth = np.array(rows["skin_type"])
    assert len(set(truth)) == 6
    estimated = estimate_skin_types(without_skin_types(rows))
    found = np.array(estimated["skin_type"])
    assert (found == truth).mean() >= 0.9, list(zip(truth, found))
    assert set(estimated["skin_type_source"]) == {"ita"} and registry_of(estimated).names == registry_of(rows).names
    for row in estimated.select(range(6)):  # the maps carry the same type as the column
        assert SemanticMap.decode(row["semantic_map"], registry_of(rows)).skin_type == row["skin_type"]


def test_recorded_types_stay_and_every_row_says_where_its_type_came_from(tmp_path):
    rows = load_any(write_folder(str(tmp_path / "folder"), good_rows()))
    assert rows["skin_type"] == [3, None, 6]
    estimated = estimate_skin_types(rows)
    assert estimated["skin_type"][0] == 3 and estimated["skin_type"][2] == 6
    assert estimated["skin_type_source"][0] == estimated["skin_type_source"][2] == "recorded"
    assert estimated["skin_type_source"][1] == "ita" and estimated["skin_type"][1] in range(1, 7)
    assert estimate_skin_types(estimated)["skin_type"] == estimated["skin_type"]  # idempotent, column replaced
    assert sum(skin_type_counts(estimated).values()) == 3 and None not in skin_type_counts(estimated)
    with pytest.raises(ValueError, match=r"needs the columns image, semantic_map and skin_type; missing \['skin_type'\]"):
        estimate_skin_types(rows.remove_columns("skin_type"))


def test_trainers_estimate_with_one_flag(tmp_path):
    root = write_folder(str(tmp_path / "folder"), good_rows())
    plain = load_training_rows(parse("--train_data_dir", root, "--resolution", "16"))
    assert plain.train["skin_type"] == [3, None, 6] and "skin_type_source" not in plain.train.column_names
    filled = load_training_rows(parse("--train_data_dir", root, "--resolution", "16", "--estimate_skin_type"))
    assert None not in filled.train["skin_type"] and filled.train["skin_type"][0] == 3
    smap = SemanticMap.decode(filled.train[1]["semantic_map"], filled.registry)
    assert smap.skin_type == filled.train["skin_type"][1]


def test_the_hard_case_loop_estimates_without_moving_the_splits(monkeypatch):
    """A generator trained with --estimate_skin_type is given typed maps by the loop; the splits stay the same."""
    import argparse

    import dermdiff.data
    from dermdiff.hardcase.cli import load_splits

    data = without_skin_types(phantom_dataset(n=60, size=16, seed=1))
    monkeypatch.setattr(dermdiff.data, "load_any", lambda path, **kwargs: data, raising=False)
    args = argparse.Namespace(phantom=False, data_dir="any", loader_kwargs={}, split_fractions=None, split_seed=0)
    plain = load_splits(args)
    typed = load_splits(argparse.Namespace(**vars(args), estimate_skin_type=True))
    for name in plain:
        assert typed[name]["image_id"] == plain[name]["image_id"]
        assert set(plain[name]["skin_type"]) == {None} and None not in typed[name]["skin_type"]
