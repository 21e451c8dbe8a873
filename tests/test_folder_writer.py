"""The one image-folder writer: what it writes, `load_any` reads back unchanged; one set of format rules."""

import json

import numpy as np
import pytest
from PIL import Image

from dermdiff import SemanticMap, get_registry
from dermdiff.data import load_any, registry_of
from dermdiff.data.folder_writer import image_stem, metadata_cell, write_image_folder
from dermdiff.metrics.generated import read_generated_set, write_generated_set

PHANTOM = get_registry("phantom")
COLUMNS = ("file_name", "label", "skin_type", "boxes", "map_file", "image_id", "patient_id")


def _entries():
    rng = np.random.default_rng(0)
    maps = [SemanticMap.from_annotations("melanoma", 5, boxes=[(2, 3, 9, 10)], size=12, registry=PHANTOM),
            SemanticMap.from_annotations("psoriasis", None, boxes=[(0, 0, 4, 4), (6, 6, 12, 12)], size=12,
                                         registry=PHANTOM),
            SemanticMap.from_annotations(None, 2, size=12, registry=PHANTOM)]
    for index, smap in enumerate(maps):
        stem = image_stem(index, len(maps))
        image = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        row = {"file_name": f"images/{stem}.png", "label": smap.condition, "skin_type": smap.skin_type,
               "boxes": [list(box) for box in smap.boxes], "map_file": f"maps/{stem}.png", "image_id": f"id-{stem}",
               "patient_id": "Zoë" if index == 0 else None}
        yield {row["file_name"]: image, row["map_file"]: smap.to_pil()}, row, smap


def test_written_folder_reads_back_unchanged(tmp_path):
    entries = list(_entries())
    write_image_folder(str(tmp_path / "set"), [(files, row) for files, row, _ in entries], COLUMNS,
                       {"registry": PHANTOM.to_dict()})
    back = load_any(str(tmp_path / "set"))
    assert registry_of(back).to_dict() == PHANTOM.to_dict()
    assert back["image_id"] == ["id-00000", "id-00001", "id-00002"]
    assert back["label_name"][:2] == ["melanoma", "psoriasis"] and back["label"][2] == -1  # empty label: healthy
    assert back["skin_type"] == [5, None, 2] and back["patient_id"] == ["Zoë", None, None]
    for (files, row, smap), copy in zip(entries, back):
        assert np.array_equal(np.asarray(copy["image"]), np.asarray(files[row["file_name"]]))
        assert SemanticMap.decode(copy["semantic_map"], PHANTOM) == smap
        assert copy["boxes"] == row["boxes"]
    raw = (tmp_path / "set" / "metadata.csv").read_bytes()
    assert b"\r" not in raw and raw.decode("utf-8").splitlines()[0] == ",".join(COLUMNS)
    assert (tmp_path / "set" / "dataset_info.json").read_text(encoding="utf-8").endswith("}\n")
    assert not [p for p in (tmp_path / "set").rglob("*") if ".tmp-" in p.name]


def test_format_rules():
    assert [image_stem(3, 10), image_stem(3, 100000), image_stem(3, 100001), image_stem(3)] == [
        "00003", "00003", "000003", "000003"]
    assert [metadata_cell(v) for v in (None, 0, "", [[1, 2, 3, 4]], 2.5)] == ["", "0", "", "[[1, 2, 3, 4]]", "2.5"]
    with pytest.raises(ValueError, match="columns must start with 'file_name'"):
        write_image_folder("unused", [], ("label",), {})


def test_generated_sets_use_the_same_rules(tmp_path):
    entries = list(_entries())
    images = [files[row["file_name"]] for files, row, _ in entries]
    write_generated_set(str(tmp_path / "gen"), images, [smap for *_, smap in entries], PHANTOM)
    raw = (tmp_path / "gen" / "metadata.csv").read_bytes()
    assert b"\r" not in raw and raw.splitlines()[3].startswith(b"images/00002.png,maps/00002.png,,2,")
    assert json.loads((tmp_path / "gen" / "dataset_info.json").read_text())["registry"] == PHANTOM.to_dict()
    generated = read_generated_set(str(tmp_path / "gen"))
    assert [m.skin_type for m in generated.maps] == [5, None, 2]
    assert len(load_any(str(tmp_path / "gen"))) == 3
