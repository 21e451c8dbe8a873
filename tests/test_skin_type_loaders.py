"""Loaders of the skin-type-labelled datasets on small fixtures written in their published CSV layouts.

Every fixture is generated here in tmp_path (tiny PNG/JPEG files, no real data), with the column names and
value spellings of the published files: Fitzpatrick17k's fitzpatrick17k.csv, DDI's ddi_metadata.csv, SCIN's
scin_cases.csv + scin_labels.csv (dataset_schema.md), ISIC 2019's ground truth + metadata CSVs and ISIC 2020's
ground truth (v2) / Kaggle train.csv.
"""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermdiff.data import load_any, make_splits, registry_of
from dermdiff.data.dispatch import detect_layout


def _image(path, seed, size=(12, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _csv(path, columns, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return str(path)


# ---- Fitzpatrick17k ------------------------------------------------------------------------------------------
FITZ_COLUMNS = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label",
                "three_partition_label", "qc", "url", "url_alphanum"]


def write_fitzpatrick17k(root):
    rows = []
    for i, (scale, label, three) in enumerate([(1, "psoriasis", "inflammatory"), (5, "melanoma", "malignant"),
                                               (-1, "psoriasis", "inflammatory"), (6, "vitiligo", "non-neoplastic")]):
        md5 = f"{i:032x}"
        _image(os.path.join(root, "images", f"{md5}.jpg"), i)
        rows.append([md5, scale, scale, label, "inflammatory", three, "", f"https://example.org/{i}.jpg", f"x{i}"])
    return _csv(os.path.join(root, "fitzpatrick17k.csv"), FITZ_COLUMNS, rows)


def test_fitzpatrick17k(tmp_path):
    write_fitzpatrick17k(tmp_path)
    assert detect_layout(str(tmp_path))[0] == "fitzpatrick17k"
    dataset = load_any(str(tmp_path), size=8)
    assert registry_of(dataset).names == ["melanoma", "psoriasis", "vitiligo"]
    assert dataset["label_name"] == ["psoriasis", "melanoma", "psoriasis", "vitiligo"]
    assert dataset["skin_type"] == [1, 5, None, 6]  # -1 = unknown
    assert dataset["image_id"][0] == f"{0:032x}" and np.asarray(dataset[0]["image"]).shape == (8, 8, 3)
    coarse = load_any(str(tmp_path), label_column="three_partition_label", limit=2)
    assert registry_of(coarse).names == ["inflammatory", "malignant", "non-neoplastic"]  # from the whole CSV
    assert coarse["label_name"] == ["inflammatory", "malignant"]


# ---- DDI ----------------------------------------------------------------------------------------------------
def write_ddi(root):
    rows = [[0, 1, "000001.png", 12, True, "melanoma-in-situ"], [1, 2, "000002.png", 56, False, "verruca-vulgaris"],
            [2, 3, "000003.png", 34, False, "seborrheic-keratosis"]]
    for i, row in enumerate(rows):
        _image(os.path.join(root, row[2]), i)  # the AIMI download keeps the images beside the CSV
    return _csv(os.path.join(root, "ddi_metadata.csv"), ["", "DDI_ID", "DDI_file", "skin_tone", "malignant",
                                                         "disease"], rows)


def test_ddi_keeps_its_skin_tone_pairs_apart_from_skin_type(tmp_path):
    write_ddi(tmp_path)
    dataset = load_any(str(tmp_path))
    assert dataset["skin_type"] == [None, None, None]  # a pair of types is not one type
    assert dataset["skin_type_range"] == ["1-2", "5-6", "3-4"]
    assert dataset["label_name"] == ["melanoma-in-situ", "verruca-vulgaris", "seborrheic-keratosis"]
    assert dataset["image_id"] == ["1", "2", "3"]
    binary = load_any(str(tmp_path), label_column="malignant")
    assert registry_of(binary).names == ["benign", "malignant"] and binary["label"] == [1, 0, 0]


# ---- SCIN ---------------------------------------------------------------------------------------------------
SCIN_CASE_COLUMNS = (
    ["case_id", "source", "release", "year", "age_group", "sex_at_birth", "fitzpatrick_skin_type"]
    + [f"race_ethnicity_{name}" for name in ("american_indian_or_alaska_native", "asian", "black_or_african_american",
                                             "hispanic_latino_or_spanish_origin", "middle_eastern_or_north_african",
                                             "native_hawaiian_or_pacific_islander", "white", "other_race",
                                             "prefer_not_to_answer")]
    + [f"textures_{name}" for name in ("raised_or_bumpy", "flat", "rough_or_flaky", "fluid_filled")]
    + [f"body_parts_{name}" for name in ("head_or_neck", "arm", "palm", "back_of_hand", "torso_front", "torso_back",
                                         "genitalia_or_groin", "buttocks", "leg", "foot_top_or_side", "foot_sole",
                                         "other")]
    + [f"condition_symptoms_{name}" for name in ("bothersome_appearance", "bleeding", "increasing_size", "darkening",
                                                 "itching", "burning", "pain", "no_relevant_experience")]
    + [f"other_symptoms_{name}" for name in ("fever", "chills", "fatigue", "joint_pain", "mouth_sores",
                                             "shortness_of_breath", "no_relevant_symptoms")]
    + ["related_category", "condition_duration", "image_1_path", "image_2_path", "image_3_path", "image_1_shot_type",
       "image_2_shot_type", "image_3_shot_type", "combined_race", "race_ethnicity_two_or_more_after_mitigation"]
)
SCIN_LABEL_COLUMNS = (
    ["case_id"] + [f"dermatologist_gradable_for_skin_condition_{i}" for i in (1, 2, 3)]
    + ["dermatologist_skin_condition_on_label_name", "dermatologist_skin_condition_confidence",
       "weighted_skin_condition_label"]
    + [f"dermatologist_gradable_for_fitzpatrick_skin_type_{i}" for i in (1, 2, 3)]
    + [f"dermatologist_fitzpatrick_skin_type_label_{i}" for i in (1, 2, 3)]
    + ["gradable_for_monk_skin_tone_india", "gradable_for_monk_skin_tone_us", "monk_skin_tone_label_india",
       "monk_skin_tone_label_us"]
)


def write_scin(root, cases=None, labels=None):
    # case id, self-reported FST, number of photos, weighted label, 3 dermatologist FSTs, Monk india/us
    spec = [
        ("-511", "FST2", 2, "{'Eczema': 0.69, 'Psoriasis': 0.31}", ("FST3", "FST3", "FST4"), ("3.0", "4.0")),
        ("-522", "NONE_SELECTED", 3, "{'Psoriasis': 0.5, 'Eczema': 0.5}", ("FST5", "FST6", ""), ("9.0", "8.0")),
        ("733", "", 1, "{'Urticaria': 1.0}", ("FST1", "", ""), ("", "")),
        ("744", "FST6", 1, "", ("", "", ""), ("", "")),  # ungradable: no condition label
    ]
    case_rows, label_rows = [], []
    for index, (case_id, self_fst, photos, weighted, derm, monk) in enumerate(spec):
        row = dict.fromkeys(SCIN_CASE_COLUMNS, "")
        row.update(case_id=case_id, source="SCIN", release="1.0.0", year=2023, fitzpatrick_skin_type=self_fst)
        for k in range(photos):
            row[f"image_{k + 1}_path"] = f"dataset/images/{case_id}{k}.png"
            row[f"image_{k + 1}_shot_type"] = "CLOSE_UP"
            _image(os.path.join(root, "dataset", "images", f"{case_id}{k}.png"), index * 3 + k)
        case_rows.append(row)
        label = dict.fromkeys(SCIN_LABEL_COLUMNS, "")
        label.update(case_id=case_id, weighted_skin_condition_label=weighted,
                     monk_skin_tone_label_india=monk[0], monk_skin_tone_label_us=monk[1])
        label.update({f"dermatologist_fitzpatrick_skin_type_label_{i + 1}": v for i, v in enumerate(derm)})
        label_rows.append(label)
    for rows, changes in ((case_rows, cases), (label_rows, labels)):
        for row in rows:
            row.update(changes or {})
    _csv(os.path.join(root, "dataset", "scin_cases.csv"), SCIN_CASE_COLUMNS, [list(r.values()) for r in case_rows])
    return _csv(os.path.join(root, "dataset", "scin_labels.csv"), SCIN_LABEL_COLUMNS,
                [list(r.values()) for r in label_rows])


def test_scin_one_row_per_photo_grouped_by_case(tmp_path):
    write_scin(tmp_path)
    assert detect_layout(str(tmp_path))[0] == "scin"
    with pytest.warns(UserWarning, match="left out 1 case"):
        dataset = load_any(str(tmp_path))
    assert registry_of(dataset).names == ["Eczema", "Urticaria"]  # the top conditions only
    assert dataset["lesion_id"] == ["-511", "-511", "-522", "-522", "-522", "733"]
    assert dataset["label_name"] == ["Eczema", "Eczema", "Eczema", "Eczema", "Eczema", "Urticaria"]  # tie: a-z
    assert dataset["skin_type"] == [3, 3, None, None, None, 1]  # majority of the dermatologists; 5 vs 6 ties
    assert dataset["skin_type_self_reported"] == ["2", "2", None, None, None, None]
    assert dataset["monk_skin_tone_us"] == ["4", "4", "8", "8", "8", None]
    assert dataset["image_id"][:2] == ["-5110", "-5111"]
    splits = make_splits(dataset, fractions={"train": 0.5, "test": 0.5}, seed=0)
    train, test = set(splits["train"]["lesion_id"]), set(splits["test"]["lesion_id"])
    assert not train & test  # a case never spans two splits
    with pytest.warns(UserWarning):
        own = load_any(str(tmp_path), skin_type_source="self_reported", conditions=["Urticaria"])
    assert own["skin_type"] == [None] and own["skin_type_dermatologist"] == ["1"]


# ---- ISIC 2019 / 2020 ---------------------------------------------------------------------------------------
ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def write_isic2019(root):
    truth = []
    for i, hot in enumerate(["NV", "NV", "MEL", "SCC"]):
        _image(os.path.join(root, "ISIC_2019_Training_Input", f"ISIC_{i:07d}.jpg"), i)
        truth.append([f"ISIC_{i:07d}"] + [1.0 if name == hot else 0.0 for name in ISIC2019_CLASSES])
    _csv(os.path.join(root, "ISIC_2019_Training_Metadata.csv"),
         ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
         [["ISIC_0000000", 55, "anterior torso", "BCN_0001", "male"], ["ISIC_0000001", 55, "anterior torso",
          "BCN_0001", "male"], ["ISIC_0000002", 30, "", "", "female"], ["ISIC_0000003", 70, "head/neck",
          "BCN_0002", "male"]])
    return _csv(os.path.join(root, "ISIC_2019_Training_GroundTruth.csv"), ["image"] + ISIC2019_CLASSES, truth)


def test_isic2019_one_hot_and_lesions(tmp_path):
    write_isic2019(tmp_path)
    dataset = load_any(str(tmp_path))
    assert registry_of(dataset).names == ISIC2019_CLASSES
    assert dataset["label_name"] == ["NV", "NV", "MEL", "SCC"] and dataset["label"] == [1, 1, 0, 7]
    assert dataset["lesion_id"] == ["BCN_0001", "BCN_0001", None, "BCN_0002"]
    assert dataset["skin_type"] == [None] * 4


ISIC2020_COLUMNS = ["image_name", "patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
                    "diagnosis", "benign_malignant", "target"]


def write_isic2020(root, name="ISIC_2020_Training_GroundTruth_v2.csv", columns=ISIC2020_COLUMNS):
    rows = [["ISIC_2637011", "IP_7279968", "IL_7972535", "male", 45.0, "head/neck", "unknown", "benign", 0],
            ["ISIC_0015719", "IP_3075186", "IL_4649854", "female", 45.0, "upper extremity", "melanoma",
             "malignant", 1],
            ["ISIC_0052212", "IP_7279968", "IL_3389283", "male", 50.0, "lower extremity", "nevus", "benign", 0]]
    for i, row in enumerate(rows):
        _image(os.path.join(root, "train", f"{row[0]}.jpg"), i)
    keep = [ISIC2020_COLUMNS.index(column) for column in columns]
    return _csv(os.path.join(root, name), columns, [[row[i] for i in keep] for row in rows])


def test_isic2020_grouped_by_patient(tmp_path):
    write_isic2020(tmp_path)
    dataset = load_any(str(tmp_path))
    assert dataset["label_name"] == ["benign", "malignant", "benign"]
    assert dataset["patient_id"] == ["IP_7279968", "IP_3075186", "IP_7279968"]
    assert dataset["lesion_id"] == ["IL_7972535", "IL_4649854", "IL_3389283"]
    by_diagnosis = load_any(str(tmp_path), label_column="diagnosis")
    assert registry_of(by_diagnosis).names == ["melanoma", "nevus", "unknown"]
    kaggle = tmp_path / "kaggle"  # train.csv of the Kaggle competition: no lesion_id
    write_isic2020(kaggle, "train.csv", [c for c in ISIC2020_COLUMNS if c != "lesion_id"])
    assert detect_layout(str(kaggle))[0] == "isic2020"
    assert "lesion_id" not in load_any(str(kaggle)).column_names


# ---- bad input: one line naming file, column (and line) and the allowed values ------------------------------
def _rewrite(path, column, line, value=None, drop=False):
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if drop:
        table = table.drop(columns=[column])
    else:
        table.loc[line - 2, column] = value
    table.to_csv(path, index=False)


BAD = [
    (write_fitzpatrick17k, "fitzpatrick_scale", 3, "7",
     r"fitzpatrick17k.csv line 3: column 'fitzpatrick_scale' has '7'; allowed values: -1, 1, 2, 3, 4, 5, 6"),
    (write_fitzpatrick17k, "md5hash", None, None, r"fitzpatrick17k.csv lacks column\(s\) \['md5hash'\]"),
    (write_ddi, "skin_tone", 4, "78", r"ddi_metadata.csv line 4: column 'skin_tone' has '78'; allowed values: 12, "
     r"34, 56"),
    (write_ddi, "malignant", 2, "yes", r"column 'malignant' has 'yes'; allowed values: True, False, 1, 0"),
    (write_ddi, "skin_tone", None, None, r"ddi_metadata.csv lacks column\(s\) \['skin_tone'\] of the DDI layout"),
    (write_scin, "monk_skin_tone_label_us", 2, "11", r"scin_labels.csv line 2: column 'monk_skin_tone_label_us' "
     r"has '11'; allowed values: 1, 2"),
    (write_scin, "dermatologist_fitzpatrick_skin_type_label_2", 3, "VI", r"column "
     r"'dermatologist_fitzpatrick_skin_type_label_2' has 'VI'; allowed values: FST1, .*NONE_SELECTED, \(empty\)"),
    (write_scin, "weighted_skin_condition_label", 2, "Eczema", r"scin_labels.csv line 2: column "
     r"'weighted_skin_condition_label' has 'Eczema'; allowed values: a dict of condition -> weight"),
    (write_scin, "fitzpatrick_skin_type", 5, "FST7", r"scin_cases.csv line 5: column 'fitzpatrick_skin_type' has "
     r"'FST7'; allowed values: FST1, FST2, FST3, FST4, FST5, FST6, NONE_SELECTED, \(empty\)"),
    (write_scin, "monk_skin_tone_label_india", None, None, r"scin_labels.csv lacks column\(s\) "
     r"\['monk_skin_tone_label_india'\]"),
    (write_isic2019, "DF", 3, "2.0", r"ISIC_2019_Training_GroundTruth.csv line 3: column 'DF' has '2.0'"),
    (write_isic2019, "MEL", 4, "0.0", r"line 4 \(image='ISIC_0000002'\): 0 of the one-hot columns"),
    (write_isic2019, "SCC", None, None, r"lacks column\(s\) \['SCC'\] of the ISIC 2019 ground truth layout"),
    (write_isic2020, "target", 2, "2", r"column 'target' has '2'; allowed values: 0, 1"),
    (write_isic2020, "patient_id", None, None, r"lacks column\(s\) \['patient_id'\]"),
]


@pytest.mark.parametrize("write, column, line, value, match", BAD, ids=[f"{w.__name__}-{c}-{v}" for w, c, _, v, _ in BAD])
def test_bad_metadata_names_file_column_and_allowed_values(tmp_path, write, column, line, value, match):
    path = write(tmp_path)
    if not os.path.basename(path).startswith(("ddi", "fitz", "ISIC")) and column in SCIN_CASE_COLUMNS:
        path = os.path.join(os.path.dirname(path), "scin_cases.csv")
    _rewrite(path, column, line, value, drop=line is None)
    with pytest.raises(ValueError, match=match):
        load_any(str(tmp_path))


def test_loader_options_are_checked(tmp_path):
    write_ddi(tmp_path)
    with pytest.raises(ValueError, match=r"label_column must be one of \['disease', 'malignant'\], got 'dx'"):
        load_any(str(tmp_path), label_column="dx")
    write_scin(tmp_path / "scin")
    with pytest.raises(ValueError, match=r"skin_type_source must be one of \['dermatologist', 'self_reported'\]"):
        load_any(str(tmp_path / "scin"), skin_type_source="monk")


def test_commands_taking_data_accept_a_new_source(tmp_path, capsys):
    from dermdiff.cli import main

    write_fitzpatrick17k(tmp_path / "fitz")
    code = main(["evaluate", "--generated", str(tmp_path / "fitz"), "--data", str(tmp_path / "fitz"), "--out",
                 str(tmp_path / "eval"), "--extractor", "torchvision:resnet18:random", "--extractor-resolution", "32",
                 "--resolution", "16", "--trials", "2", "--no-cache", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "(split-half, 2 vs 2 real images)" in printed and "at samples' size" not in printed


def test_bad_metadata_from_the_command_line_is_one_line_and_exit_1(tmp_path, capsys):
    from dermdiff.cli import main

    path = write_ddi(tmp_path / "ddi")
    _rewrite(path, "skin_tone", 3, "78")
    code = main(["evaluate", "--generated", str(tmp_path / "ddi"), "--data", str(tmp_path / "ddi"), "--out",
                 str(tmp_path / "eval"), "--extractor", "torchvision:resnet18:random", "--quiet"])
    error = capsys.readouterr().err
    assert code == 1 and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert "ddi_metadata.csv line 3: column 'skin_tone' has '78'; allowed values: 12, 34, 56" in error
