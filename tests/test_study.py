"""Human study: folder scan, per-rater plans, durable store, statistics, the web app's refusals, export,
and (marked `browser`) the whole flow in headless Chromium with a server crash and restart."""

from __future__ import annotations

import csv
import http.client
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from dermdiff.cli import main as cli_main
from dermdiff.study import (
    AlreadyAnsweredError,
    NotFoundError,
    StudyError,
    StudyStore,
    fleiss_kappa,
    plan_units,
    scan_folder,
    summarize,
)
from dermdiff.study.stats import (
    agreement,
    binary_scores,
    condition_recall,
    select_rates,
    spread,
    timed_scores,
)

CONDITIONS = ("mel", "nv")
CODES = "ana:secret-ana,ben:secret-ben"


def _skin_image(seed: int, size: int = 64) -> Image.Image:
    """A skin-coloured square with a darker elliptical lesion (enough to look like a study image)."""
    rng = np.random.default_rng(seed)
    tone = np.array([224, 180, 150]) * rng.uniform(0.55, 1.0)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.35, 0.65, size=2) * size
    ry, rx = rng.uniform(0.12, 0.3, size=2) * size
    lesion = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    image = np.broadcast_to(tone, (size, size, 3)).copy() + rng.normal(0, 6, (size, size, 3))
    image[lesion] *= rng.uniform(0.35, 0.6)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def make_folder(root, source: str, per_condition: int = 4, metadata: bool = True, seed: int = 0) -> str:
    """`per_condition` images of each of CONDITIONS; real ones as JPEG, synthetic ones as PNG."""
    os.makedirs(root, exist_ok=True)
    extension = "jpg" if source == "real" else "png"
    rows = []
    for c_index, condition in enumerate(CONDITIONS):
        for i in range(per_condition):
            name = f"{source}_{condition}_{i}.{extension}"
            _skin_image(seed * 1000 + c_index * 100 + i).save(os.path.join(root, name))
            rows.append((name, condition))
    if metadata:
        os.makedirs(os.path.join(root, "maps"), exist_ok=True)
        Image.new("RGB", (8, 8), (3, 1, 0)).save(os.path.join(root, "maps", "map_0.png"))  # must not be shown
        with open(os.path.join(root, "metadata.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "label"])
            writer.writerows(rows)
    return str(root)


@pytest.fixture
def folders(tmp_path):
    return make_folder(tmp_path / "real", "real"), make_folder(tmp_path / "synthetic", "synthetic", seed=1)


# ---------------------------------------------------------------------------------------------- stats
# Wikipedia's worked example for Fleiss' kappa: 10 items, 14 raters, 5 categories; kappa = 0.210.
WIKIPEDIA_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_matches_worked_examples():
    # P_bar = 0.37802, Pe_bar = 0.21337 -> (0.37802 - 0.21337) / (1 - 0.21337) = 0.20993
    assert fleiss_kappa(WIKIPEDIA_TABLE) == pytest.approx(0.20993, abs=5e-5)
    # By hand: P_i = 1, 1, 0 -> P_bar = 2/3; p = (1/2, 1/2) -> Pe_bar = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3.
    assert fleiss_kappa([[2, 0], [0, 2], [1, 1]]) == pytest.approx(1 / 3)
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)
    # Systematic disagreement is below chance: P_bar = 0, Pe_bar = 1/2 -> -1.
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    assert math.isnan(fleiss_kappa([[2, 0], [2, 0]]))


@pytest.mark.parametrize("table", [[], [[1, 0]], [[2, 0], [1, 0]], [[2, -1, 1]], [[2, 0], [1, 1, 0]]])
def test_fleiss_kappa_rejects_bad_tables(table):
    with pytest.raises(ValueError, match="fleiss_kappa needs|same number .>= 2. of ratings"):
        fleiss_kappa(table)


def _row(rater, source, condition, answer, item="i", task="select", prompt=None):
    return {"rater": rater, "task": task, "item_id": item, "source": source, "condition": condition,
            "answer": answer, "prompt": prompt}


def test_select_rates_per_condition_and_spread():
    rows = [
        # ana: mel real 1/2 selected, mel synthetic 1/1; nv real 1/1, nv synthetic 0/1
        _row("ana", "real", "mel", "selected", "a"), _row("ana", "real", "mel", "unselected", "b"),
        _row("ana", "synthetic", "mel", "selected", "c"), _row("ana", "real", "nv", "selected", "d"),
        _row("ana", "synthetic", "nv", "unselected", "e"),
        # ben: mel real 2/2, mel synthetic 0/1; saw no nv image
        _row("ben", "real", "mel", "selected", "a"), _row("ben", "real", "mel", "selected", "b"),
        _row("ben", "synthetic", "mel", "unselected", "c"),
    ]
    rates = select_rates(rows)
    assert rates["mel"]["tpr"]["per_rater"] == {"ana": 0.5, "ben": 1.0}
    assert rates["mel"]["tpr"]["mean"] == pytest.approx(0.75)
    assert rates["mel"]["tpr"]["std"] == pytest.approx(math.sqrt(0.125))  # sample std of (0.5, 1.0)
    assert rates["mel"]["fpr"]["per_rater"] == {"ana": 1.0, "ben": 0.0}
    assert rates["nv"]["tpr"] == {"mean": 1.0, "std": None, "raters": 1, "per_rater": {"ana": 1.0, "ben": None}}
    assert rates["all"]["tpr"]["per_rater"] == {"ana": 2 / 3, "ben": 1.0}
    assert rates["all"]["fpr"]["per_rater"] == {"ana": 0.5, "ben": 0.0}
    # a, b, c were rated by both: a agrees (selected), b and c split -> P = (1, 0, 0), P_bar = 1/3;
    # p = (selected 4/6, unselected 2/6) -> Pe_bar = 5/9; kappa = (1/3 - 5/9) / (1 - 5/9) = -1/2
    assert agreement(rows) == {"kappa": pytest.approx(-0.5), "items": 3, "raters": 2}


def test_condition_recall_counts_only_targets():
    rows = [
        _row("ana", "real", "mel", "selected", "a", "condition", "mel"),
        _row("ana", "real", "mel", "unselected", "b", "condition", "mel"),
        _row("ana", "synthetic", "mel", "selected", "c", "condition", "mel"),
        _row("ana", "synthetic", "nv", "selected", "d", "condition", "mel"),  # distractor: a false alarm
        _row("ana", "real", "nv", "unselected", "e", "condition", "mel"),  # distractor, rightly left
    ]
    rates = condition_recall(rows)
    assert rates["mel"]["recall_real"]["mean"] == 0.5
    assert rates["mel"]["recall_synthetic"]["mean"] == 1.0
    assert rates["all"]["false_alarm"]["mean"] == 0.5
    assert "nv" not in rates


def test_timed_f1_synthetic_positive():
    rows = [
        _row("ana", "synthetic", "mel", "synthetic", task="timed"),  # TP
        _row("ana", "synthetic", "mel", "real", task="timed"),  # FN
        _row("ana", "real", "nv", "synthetic", task="timed"),  # FP
        _row("ana", "real", "nv", "real", task="timed"),  # TN
        _row("ana", "synthetic", "nv", "synthetic", task="timed"),  # TP
    ]
    scores = binary_scores(rows)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1)) and scores["accuracy"] == pytest.approx(3 / 5)
    summary = timed_scores(rows)
    assert summary["per_rater"]["ana"]["f1_real_positive"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert summary["f1"]["mean"] == pytest.approx(2 / 3) and summary["f1"]["std"] is None
    assert summary["per_condition"]["nv"]["f1"]["mean"] == pytest.approx(2 * 1 / (2 + 1 + 0))
    assert spread([None, None]) == {"mean": None, "std": None, "raters": 0}


# ------------------------------------------------------------------------------------ folders and plans
def test_scan_folder_reads_metadata_and_skips_helper_images(folders, tmp_path):
    real, _ = folders
    images = scan_folder(real, "real")
    assert len(images) == 8 and {image.condition for image in images} == set(CONDITIONS)
    assert not any("maps" in image.path for image in images)
    plain = make_folder(tmp_path / "plain", "synthetic", per_condition=2, metadata=False)
    assert [image.condition for image in scan_folder(plain, "synthetic")] == [None] * 4
    with pytest.raises(FileNotFoundError, match="real image folder .*missing does not exist"):
        scan_folder(str(tmp_path / "missing"), "real")
    with pytest.raises(ValueError, match="source must be one of .*got 'fake'"):
        scan_folder(real, "fake")
    os.remove(os.path.join(real, "real_mel_0.jpg"))
    with pytest.raises(FileNotFoundError, match="real_mel_0.jpg"):
        scan_folder(real, "real")


ITEMS = [(f"{i:016x}", "real" if i % 2 else "synthetic", CONDITIONS[i % 3 % 2]) for i in range(20)]


@pytest.mark.parametrize("task", ["select", "condition", "timed"])
def test_plans_are_seeded_per_rater_and_show_each_image_once(task):
    first = plan_units(task, ITEMS, "ana", seed=3, grid=6)
    assert first == plan_units(task, list(reversed(ITEMS)), "ana", seed=3, grid=6)
    assert first != plan_units(task, ITEMS, "ben", seed=3, grid=6)
    assert first != plan_units(task, ITEMS, "ana", seed=4, grid=6)
    shown = [item for unit in first for item in unit.item_ids]
    assert sorted(shown) == sorted(item[0] for item in ITEMS)
    assert all(1 <= len(unit.item_ids) <= (1 if task == "timed" else 6) for unit in first)
    if task == "condition":
        labels = {item[0]: item[2] for item in ITEMS}
        for unit in first:
            targets = [i for i in unit.item_ids if labels[i] == unit.prompt]
            assert len(targets) >= 1 and 2 * (len(unit.item_ids) - len(targets)) <= len(targets)


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        plan_units("rank", ITEMS, "ana")
    with pytest.raises(ValueError, match="grid"):
        plan_units("select", ITEMS, "ana", grid=1)
    with pytest.raises(ValueError, match="condition labels"):
        plan_units("condition", [("0" * 16, "real", None)], "ana")
    assert len(plan_units("timed", ITEMS, "ana", items_per_rater=5)) == 5


# -------------------------------------------------------------------------------------------- store
def _store_with_plan(path, folders, rater="ana", task="select", grid=4):
    store = StudyStore(path)
    store.add_images(scan_folder(folders[0], "real") + scan_folder(folders[1], "synthetic"))
    store.ensure_plan(rater, task, lambda: plan_units(task, store.items(), rater, grid=grid))
    return store


def test_store_records_refuses_replays_and_survives_reopening(folders, tmp_path):
    db = str(tmp_path / "study.sqlite")
    store = _store_with_plan(db, folders)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    unit = store.unit("ana", "select", 0)
    answers = {item: ("selected" if k % 2 else "unselected") for k, item in enumerate(unit.item_ids)}
    assert store.record_answer("ana", "select", 0, answers, response_ms=900) == 4
    before = store.answer_rows()
    flipped = {item: "selected" for item in unit.item_ids}
    with pytest.raises(AlreadyAnsweredError, match="unit 0 was already answered"):
        store.record_answer("ana", "select", 0, flipped)
    with pytest.raises(NotFoundError, match="no unit 99 in ana's select plan"):
        store.record_answer("ana", "select", 99, answers)
    with pytest.raises(NotFoundError, match="unknown image id 'f+'"):
        store.record_answer("ana", "select", 1, {"f" * 16: "selected"})
    other = store.unit("ana", "select", 1)
    with pytest.raises(StudyError, match="not part"):
        store.record_answer("ana", "select", 1, {unit.item_ids[0]: "selected"})
    with pytest.raises(StudyError, match="needs an answer"):
        store.record_answer("ana", "select", 1, {other.item_ids[0]: "selected"})
    with pytest.raises(StudyError, match="must be one of"):
        store.record_answer("ana", "select", 1, {item: "real" for item in other.item_ids})
    assert store.answer_rows() == before
    # a second plan request keeps the stored plan; ids stay stable when the folders are rescanned
    store.ensure_plan("ana", "select", list)
    ids = store.items()
    store.add_images(scan_folder(folders[0], "real"))
    assert store.items() == ids
    store.close()
    with StudyStore(db) as reopened:  # a new process would see the same
        assert reopened.answer_rows() == before
        assert reopened.progress("ana", "select") == (1, 1, 4)
        assert reopened.unit("ana", "select", 1) == other


def test_store_concurrent_raters_lose_nothing(folders, tmp_path):
    db = str(tmp_path / "study.sqlite")
    raters = ["r0", "r1", "r2", "r3"]
    with StudyStore(db) as store:
        store.add_images(scan_folder(folders[0], "real") + scan_folder(folders[1], "synthetic"))
        items = store.items()
    errors = []

    def rate(rater):
        try:
            with StudyStore(db) as mine:  # one connection per thread, as the web app does per request
                mine.ensure_plan(rater, "timed", lambda: plan_units("timed", items, rater))
                for index in range(16):
                    (item,) = mine.unit(rater, "timed", index).item_ids
                    mine.record_answer(rater, "timed", index, {item: "real" if index % 3 else "synthetic"})
                    with pytest.raises(AlreadyAnsweredError, match=f"unit {index} was already answered"):
                        mine.record_answer(rater, "timed", index, {item: "real"})
        except Exception as error:  # noqa: BLE001 - any failure in a thread is reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=rate, args=(rater,)) for rater in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    with StudyStore(db) as store:
        assert store.count("answers") == 16 * len(raters)
        kappa = agreement([row for row in store.answer_rows()])
    assert kappa["items"] == 16 and kappa["raters"] == 4


# ------------------------------------------------------------------------------------------ web app
@pytest.fixture
def app_factory(folders, tmp_path):
    from dermdiff.study.app import create_app, parse_access_codes

    def build(task="select", codes=CODES, **kwargs):
        return create_app(str(tmp_path / "study.sqlite"), *folders, task=task,
                          access_codes=parse_access_codes(codes), grid=4, **kwargs)

    return build


def _login(client, rater="ana", code="secret-ana"):
    return client.post("/login", data={"rater": rater, "code": code})


def _counts(db):
    with StudyStore(db) as store:
        return {table: store.count(table) for table in ("sessions", "units", "answers")}, store.answer_rows()


def test_login_refusals_store_nothing(app_factory, tmp_path):
    client = app_factory().test_client()
    db = str(tmp_path / "study.sqlite")
    empty = _counts(db)
    assert client.get("/").status_code == 200
    assert _login(client, code="").status_code == 401
    assert _login(client, code="secret-ben").status_code == 403
    assert _login(client, rater="eve", code="secret-ana").status_code == 403
    assert _login(client, rater="../etc").status_code == 400
    assert client.get("/api/next").status_code == 401
    assert client.post("/api/answer", json={"unit": 0, "selected": []}).status_code == 401
    client.set_cookie("dermdiff_study", "forged-token")
    assert client.get("/api/next").status_code == 401
    assert _counts(db) == empty
    assert _login(client).status_code == 303
    assert client.get("/api/next").status_code == 200


def test_page_and_api_never_reveal_the_source(app_factory, folders):
    for image in scan_folder(folders[0], "real"):  # real photos 80x60 JPEG, synthetic 64x64 PNG
        Image.open(image.path).resize((80, 60)).save(image.path)
    client = app_factory(image_size=96).test_client()
    _login(client)
    page = client.get("/").get_data(as_text=True)
    state = client.get("/api/next").get_json()
    assert set(state) == {"task", "answered", "total", "view_seconds", "finished", "unit", "prompt", "prompt_label",
                          "items"}
    text = page + json.dumps(state)
    for word in (folders[0], folders[1], "real_", "synthetic_", ".jpg", "metadata"):
        assert word not in text
    for item in state["items"]:  # every image is served alike: a 96x96 PNG, whatever its file was
        image = client.get(f"/image/{item}")
        assert image.status_code == 200 and image.mimetype == "image/png"
        served = Image.open(io.BytesIO(image.data))
        assert served.format == "PNG" and served.size == (96, 96) and not served.info.get("exif")
    contain = app_factory(image_size=96, fit="contain").test_client()
    _login(contain)
    sizes = {Image.open(io.BytesIO(contain.get(f"/image/{item}").data)).size for item in state["items"]}
    assert sizes <= {(96, 72), (96, 96)}


def test_bad_answers_get_4xx_and_change_nothing(app_factory, tmp_path):
    client = app_factory().test_client()
    db = str(tmp_path / "study.sqlite")
    _login(client)
    state = client.get("/api/next").get_json()
    unit, items = state["unit"], state["items"]
    good = {"unit": unit, "selected": items[:2]}
    assert client.post("/api/answer", json=good).status_code == 201
    after_first = _counts(db)
    second = client.get("/api/next").get_json()["items"]
    with StudyStore(db) as store:  # an existing image that is on neither page
        foreign = next(item for item, *_ in store.items() if item not in items + second)
    bad_requests = [
        ({"data": "{not json", "content_type": "application/json"}, 400),
        ({"data": "unit=1", "content_type": "application/x-www-form-urlencoded"}, 400),
        ({"json": [1, 2]}, 400),
        ({"json": {"selected": []}}, 400),
        ({"json": {"unit": True, "selected": []}}, 400),
        ({"json": {"unit": -1, "selected": []}}, 400),
        ({"json": {"unit": 999, "selected": []}}, 404),
        ({"json": {"unit": unit + 1, "selected": ["f" * 16]}}, 404),  # unknown image id
        ({"json": {"unit": unit + 1, "selected": [foreign]}}, 400),  # not on this page
        ({"json": {"unit": unit + 1, "selected": "all"}}, 400),
        ({"json": {"unit": unit + 1, "selected": [items[0], items[0]]}}, 400),
        ({"json": {"unit": unit + 1, "selected": [], "response_ms": "slow"}}, 400),
        ({"json": {"unit": unit, "selected": items}}, 409),  # replay with a different answer
        ({"json": good}, 409),  # plain replay
    ]
    for kwargs, status in bad_requests:
        response = client.post("/api/answer", **kwargs)
        assert response.status_code == status, (kwargs, response.get_json())
    assert _counts(db) == after_first
    assert client.get("/image/" + "f" * 16).status_code == 404
    assert client.get("/image/..%2f..%2fetc%2fpasswd").status_code == 404
    assert client.get("/image/not-an-id").status_code == 404
    fresh = app_factory().test_client()
    assert fresh.get(f"/image/{items[0]}").status_code == 401


def test_images_outside_the_raters_plan_are_not_served(app_factory, tmp_path):
    client = app_factory(items_per_rater=3).test_client()
    _login(client)
    mine = client.get("/api/next").get_json()["items"]
    with StudyStore(str(tmp_path / "study.sqlite")) as store:
        others = [item for item, *_ in store.items() if item not in mine]
    assert len(mine) == 3 and client.get(f"/image/{others[0]}").status_code == 404
    assert client.get(f"/image/{mine[0]}").status_code == 200


def test_timed_task_and_resume_after_restart(app_factory, tmp_path):
    client = app_factory(task="timed", view_seconds=2.0).test_client()
    _login(client, "ben", "secret-ben")
    state = client.get("/api/next").get_json()
    assert state["view_seconds"] == 2.0 and len(state["items"]) == 1 and state["total"] == 16
    assert client.post("/api/answer", json={"unit": state["unit"], "item": state["items"][0],
                                            "answer": "maybe"}).status_code == 400
    answered = client.post("/api/answer", json={"unit": state["unit"], "item": state["items"][0],
                                                "answer": "synthetic", "response_ms": 1500})
    assert answered.status_code == 201 and answered.get_json()["answered"] == 1
    expected_next = answered.get_json()["items"]
    cookie = client.get_cookie("dermdiff_study").value
    restarted = app_factory(task="timed", view_seconds=2.0).test_client()  # a new server on the same file
    restarted.set_cookie("dermdiff_study", cookie)
    resumed = restarted.get("/api/next").get_json()
    assert resumed["answered"] == 1 and resumed["items"] == expected_next
    again = app_factory(task="timed", view_seconds=2.0).test_client()  # logging in again also resumes
    _login(again, "ben", "secret-ben")
    assert again.get("/api/next").get_json()["items"] == expected_next


def test_export_writes_answers_and_summary(app_factory, tmp_path):
    client_a, client_b = app_factory().test_client(), app_factory().test_client()
    _login(client_a)
    _login(client_b, "ben", "secret-ben")
    for client in (client_a, client_b):  # both raters select every real image of their first page
        state = client.get("/api/next").get_json()
        with StudyStore(str(tmp_path / "study.sqlite")) as store:
            real = [i for i in state["items"] if store.item(i)["source"] == "real"]
        assert client.post("/api/answer", json={"unit": state["unit"], "selected": real}).status_code == 201
    out = tmp_path / "export"
    assert cli_main(["study", "export", "--db", str(tmp_path / "study.sqlite"), "--out", str(out)]) == 0
    with open(out / "answers.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {row["rater"] for row in rows} == {"ana", "ben"}
    assert all((row["answer"] == "selected") == (row["source"] == "real") for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    select = summary["tasks"]["select"]
    for name, value in (("tpr", 1.0), ("fpr", 0.0)):
        stat = select["rates"]["all"][name]
        if stat["raters"]:
            assert stat["mean"] == value and stat["std"] in (0.0, None)
    assert "Fleiss' kappa" in (out / "summary.md").read_text()
    assert summarize([])["tasks"] == {}


def test_condition_task_prompts_with_display_names(app_factory, tmp_path):
    names = {"mel": "Melanoma", "nv": "Melanocytic nevus"}
    client = app_factory(task="condition", condition_names=names).test_client()
    _login(client)
    state = client.get("/api/next").get_json()
    assert state["prompt"] in CONDITIONS and state["prompt_label"] == names[state["prompt"]]
    with StudyStore(str(tmp_path / "study.sqlite")) as store:
        labels = {item: store.item(item)["condition"] for item in state["items"]}
    targets = [item for item, label in labels.items() if label == state["prompt"]]
    assert 2 * (len(labels) - len(targets)) <= len(targets)
    assert client.post("/api/answer", json={"unit": state["unit"], "selected": targets}).status_code == 201
    with StudyStore(str(tmp_path / "study.sqlite")) as store:
        summary = summarize(store.answer_rows())
    rates = summary["tasks"]["condition"]["rates"][state["prompt"]]
    shown = [rates["recall_real"]["mean"], rates["recall_synthetic"]["mean"]]
    assert all(value in (1.0, None) for value in shown) and shown != [None, None]


def test_access_codes_from_text_or_file(tmp_path):
    from dermdiff.study.app import parse_access_codes

    assert parse_access_codes("ana:secret-ana, ben:secret-ben") == {"ana": "secret-ana", "ben": "secret-ben"}
    path = tmp_path / "codes.txt"
    path.write_text("# rater:code\nana:secret-ana\n\nben : secret-ben\n")
    assert parse_access_codes(str(path)) == {"ana": "secret-ana", "ben": "secret-ben"}
    assert parse_access_codes(None) is None
    for bad in ("ana", "ana:abc", "a/b:secret-1", ":secret"):
        with pytest.raises(ValueError, match="expected key:value pairs|access codes are rater:code pairs"):
            parse_access_codes(bad)


def test_browser_test_skips_without_chromium_but_fails_in_ci(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        _chromium()
    monkeypatch.setenv("CI", "true")  # CI must run it: .ci/install-browser installs Chromium there
    with pytest.raises(pytest.fail.Exception, match="CI.*chromium"):
        _chromium()


def test_cli_refuses_public_host_without_codes(folders, tmp_path, capsys):
    code = cli_main(["study", "serve", "--real", folders[0], "--synthetic", folders[1],
                     "--db", str(tmp_path / "s.sqlite"), "--host", "0.0.0.0"])
    assert code == 2 and "--access-codes" in capsys.readouterr().err
    assert cli_main(["study", "serve", "--real", folders[0], "--synthetic", folders[1],
                     "--db", str(tmp_path / "s.sqlite"), "--view-seconds", "0.1"]) == 2


# ------------------------------------------------------------------------- end to end in headless Chromium
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    """`dermdiff study serve` in a subprocess on a loopback port; `kill()` simulates a crash."""

    def __init__(self, args: list[str], port: int, log_path: str):
        self.port = port
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log:  # the child keeps its own copy of the file descriptor
            self.process = subprocess.Popen([sys.executable, "-m", "dermdiff.cli", "study", "serve", *args,
                                             "--host", "127.0.0.1", "--port", str(port)],
                                            stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"study server exited with {self.process.returncode}; see {log_path}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("study server did not start within 60 s")

    def kill(self, sig=signal.SIGKILL):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)


def _skip_or_fail(reason: str):
    """Skip on a developer's machine; in CI (CI=true) a browser test that cannot run is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the browser tests, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _chromium():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        _skip_or_fail(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
                      "run .ci/install-browser as root")
    try:
        from selenium import webdriver
    except ImportError:
        _skip_or_fail("needs selenium (pip install dermdiff[browser])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--disable-default-apps", "--no-pings",
                 # only loopback traffic: every other host name fails to resolve
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def _wait(driver, condition, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_browser_answer_crash_restart_resume_export(tmp_path):
    driver = _chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    shots = os.environ.get("DERMDIFF_STUDY_SCREENSHOTS", str(tmp_path))
    os.makedirs(shots, exist_ok=True)
    real = make_folder(tmp_path / "real", "real", per_condition=4, seed=2)
    synthetic = make_folder(tmp_path / "synthetic", "synthetic", per_condition=4, seed=3)
    db, port = str(tmp_path / "study.sqlite"), _free_port()
    base = ["--real", real, "--synthetic", synthetic, "--db", db, "--access-codes", CODES, "--grid", "6"]
    url = f"http://127.0.0.1:{port}/"
    server = None

    def progress_is(text):
        return lambda d: d.find_element(By.ID, "progress-text").text == text

    def tiles():
        found = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .tile img"))
        _wait(driver, lambda d: all(i.get_property("naturalWidth") > 0 for i in found))
        return [tile.get_attribute("data-id") for tile in driver.find_elements(By.CSS_SELECTOR, "#grid .tile")]

    try:
        server = _Server(base + ["--task", "select"], port, str(tmp_path / "server.log"))
        # 1. log in with the access code
        driver.get(url)
        driver.find_element(By.ID, "rater").send_keys("ana")
        driver.find_element(By.ID, "code").send_keys("secret-ana")
        driver.find_element(By.ID, "login").click()
        # 2. page 1: click two images, submit with the button
        page1 = tiles()
        _wait(driver, progress_is("0 / 3"))
        tile_elements = driver.find_elements(By.CSS_SELECTOR, "#grid .tile")
        tile_elements[0].click()
        tile_elements[2].click()
        assert driver.find_element(By.ID, "selected-count").text == "2 selected"
        driver.find_element(By.ID, "submit").click()
        _wait(driver, progress_is("1 / 3"))
        # 3. page 2: keyboard only: "1" selects the first image, Enter submits
        page2 = tiles()
        assert page2 != page1
        driver.find_element(By.TAG_NAME, "body").send_keys("1")
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
        _wait(driver, progress_is("2 / 3"))
        page3 = tiles()
        driver.find_elements(By.CSS_SELECTOR, "#grid .tile")[1].click()  # selected, never submitted
        driver.save_screenshot(os.path.join(shots, "study_select.png"))
        # 4. crash the server and start it again on the same database
        server.kill()
        server = _Server(base + ["--task", "select"], port, str(tmp_path / "server.log"))
        driver.refresh()
        assert tiles() == page3  # the rater resumes at the next unanswered page
        _wait(driver, progress_is("2 / 3"))
        # 5. restart into the timed task: shown for 0.5 s, answered with the keyboard and a click
        server.kill(signal.SIGTERM)
        server = _Server(base + ["--task", "timed", "--view-seconds", "0.5"], port, str(tmp_path / "server.log"))
        driver.refresh()
        _wait(driver, lambda d: d.find_element(By.ID, "answer-real").is_enabled())
        _wait(driver, lambda d: d.find_element(By.ID, "veil").text == "Real or synthetic?")
        driver.save_screenshot(os.path.join(shots, "study_timed.png"))
        driver.find_element(By.TAG_NAME, "body").send_keys("s")
        _wait(driver, progress_is("1 / 16"))
        _wait(driver, lambda d: d.find_element(By.ID, "answer-real").is_enabled())
        driver.find_element(By.ID, "answer-real").click()
        _wait(driver, progress_is("2 / 16"))
    finally:
        driver.quit()
        if server is not None:
            server.kill(signal.SIGTERM)

    # 6. the export holds exactly what was answered
    out = tmp_path / "export"
    assert cli_main(["study", "export", "--db", db, "--out", str(out)]) == 0
    with open(out / "answers.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    select = [row for row in rows if row["task"] == "select"]
    timed = [row for row in rows if row["task"] == "timed"]
    assert len(select) == 12 and len(timed) == 2
    assert {row["item_id"] for row in select} == set(page1) | set(page2)
    assert {row["item_id"] for row in select if row["answer"] == "selected"} == {page1[0], page1[2], page2[0]}
    assert [row["answer"] for row in sorted(timed, key=lambda row: int(row["unit"]))] == ["synthetic", "real"]
    summary = json.loads((out / "summary.json").read_text())
    real_shown = [row for row in select if row["source"] == "real"]
    tpr = sum(row["answer"] == "selected" for row in real_shown) / len(real_shown)
    assert summary["tasks"]["select"]["rates"]["all"]["tpr"]["per_rater"]["ana"] == pytest.approx(tpr)
    assert summary["tasks"]["timed"]["answers"] == 2


def _serve_folder(folder: str, port: int):
    """A plain static server for `folder` on another loopback port: the "other site" of a cross-site test."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_browser_refuses_cross_site_login_and_skips_broken_images(tmp_path):
    driver = _chromium()
    from selenium.webdriver.common.by import By

    real = make_folder(tmp_path / "real", "real", per_condition=2, seed=4)
    synthetic = make_folder(tmp_path / "synthetic", "synthetic", per_condition=2, seed=5)
    for name in os.listdir(real):  # every real image is damaged: not an image any more
        if name.endswith(".jpg"):
            with open(os.path.join(real, name), "wb") as handle:
                handle.write(b"not a jpeg")
    db, port, other_port = str(tmp_path / "study.sqlite"), _free_port(), _free_port()
    base = ["--real", real, "--synthetic", synthetic, "--db", db, "--access-codes", CODES]
    url = f"http://127.0.0.1:{port}/"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "index.html").write_text(  # a page elsewhere that tries to log the visitor in as ben
        f'<form method="post" action="{url}login"><input name="rater" value="ben">'
        '<input name="code" value="secret-ben"><button id="go">Win a prize</button></form>')
    server, other = None, _serve_folder(str(evil), other_port)
    log = str(tmp_path / "server.log")

    def progress():
        return driver.find_element(By.ID, "progress-text").text

    try:
        server = _Server(base + ["--task", "timed", "--view-seconds", "0.5"], port, log)
        # 1. the cross-site login is refused and leaves no session
        driver.get(f"http://127.0.0.1:{other_port}/")
        driver.find_element(By.ID, "go").click()
        _wait(driver, lambda d: "cross-site request refused" in d.page_source)
        driver.get(url)
        assert driver.find_elements(By.ID, "rater")  # the login page: not logged in as ben
        with StudyStore(db) as store:
            assert store.count("sessions") == 0
        # 2. log in; one readable image is deleted after the start; the rater answers to the end
        driver.find_element(By.ID, "rater").send_keys("ana")
        driver.find_element(By.ID, "code").send_keys("secret-ana")
        driver.find_element(By.ID, "login").click()
        _wait(driver, lambda d: progress().endswith(" / 8"))  # broken images may already have been skipped
        with StudyStore(db) as store:  # the last readable image of the plan: not reached before a key press
            plan = [store.unit("ana", "timed", index, with_skipped=True).item_ids[0] for index in range(8)]
            deleted = [store.item(i)["path"] for i in plan if store.item(i)["source"] == "synthetic"][-1]
        with open(deleted, "rb") as handle:
            kept = handle.read()
        os.remove(deleted)
        for _ in range(10):
            ready = _wait(driver, lambda d: ("done" if d.find_element(By.ID, "done").is_displayed() else
                                             d.find_element(By.ID, "answer-real").is_enabled() and "answer"))
            if ready == "done":
                break
            before = progress()
            driver.find_element(By.TAG_NAME, "body").send_keys("s")
            _wait(driver, lambda d: progress() != before)
        assert driver.find_element(By.ID, "done").is_displayed() and progress() == "8 / 8"
        driver.save_screenshot(str(tmp_path / "study_done.png"))
        # 3. the grid task: broken tiles are marked and the page is still submitted
        server.kill(signal.SIGTERM)
        with open(deleted, "wb") as handle:  # back in place, so the new server starts and shows it
            handle.write(kept)
        server = _Server(base + ["--task", "select", "--grid", "4"], port, log)
        driver.refresh()
        for _ in range(4):
            if driver.find_element(By.ID, "done").is_displayed():
                break
            found = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .tile"))
            _wait(driver, lambda d: all(t.get_attribute("class") == "tile broken"
                                        or t.find_element(By.TAG_NAME, "img").get_property("naturalWidth") > 0
                                        for t in found))
            before = progress()  # read once the page is shown ("–" until the first page arrives)
            for tile in found:
                tile.click()  # broken tiles ignore the click
            driver.find_element(By.ID, "submit").click()
            _wait(driver, lambda d: progress() != before)
        _wait(driver, lambda d: d.find_element(By.ID, "done").is_displayed())
    finally:
        driver.quit()
        other.shutdown()
        if server is not None:
            server.kill(signal.SIGTERM)

    with StudyStore(db) as store:
        rows, skipped = store.answer_rows(), store.skipped_rows()
    assert {(row["task"], row["source"], row["answer"]) for row in rows} == {("timed", "synthetic", "synthetic"),
                                                                             ("select", "synthetic", "selected")}
    assert [row["task"] for row in rows].count("timed") == 3 and [row["task"] for row in rows].count("select") == 4
    assert len(skipped) == 9 and {row["task"] for row in skipped} == {"timed", "select"}
    with open(log, encoding="utf-8") as handle:
        assert handle.read().count("cannot be read") >= 5
