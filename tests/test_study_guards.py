"""The study app on a shared machine (issue 15): malformed input gets a 4xx naming the bad thing (never a
500), unreadable images are skipped for the rater, Host allow-list, cross-site refusals, session expiry,
access-code rate limits, and `study export`/`serve` refusing a database that is not a study."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import types

import pytest
from test_study import CODES, _counts, _login, app_factory, folders, make_folder  # noqa: F401 - fixtures

import dermdiff.study.store as store_module
from dermdiff.cli import main as cli_main
from dermdiff.study import StudyStore
from dermdiff.study.guards import AttemptLimiter, allowed_hosts, json_depth

JSON = "application/json"
VALID = "0123456789abcdef"  # a well-formed image id that is in no plan


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    """One app per task for the whole module (the refusal tests change nothing, which each one checks)."""
    from dermdiff.study.app import create_app, parse_access_codes

    root = tmp_path_factory.mktemp("shared_study")
    real, synthetic = make_folder(root / "real", "real"), make_folder(root / "synthetic", "synthetic", seed=1)
    apps = {}

    def client_for(task: str):
        """A client of the task's app, logged in as ana (one session shared by the module), and the db."""
        db = str(root / f"{task}.sqlite")
        if task not in apps:
            app = create_app(db, real, synthetic, task=task, access_codes=parse_access_codes(CODES), grid=4)
            first = app.test_client()
            _login(first)
            apps[task] = app, first.get_cookie("dermdiff_study").value
        app, cookie = apps[task]
        client = app.test_client()
        client.set_cookie("dermdiff_study", cookie)
        return client, db

    return client_for


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (task, raw body, content type, status, what the message must name); `{U}` is the rater's open unit.
MALFORMED_ANSWERS = [
    ("select", '{"unit": 1000000000000000000000000000000, "selected": []}', JSON, 400, "'unit' must be an integer"),
    ("select", '{"unit": 9223372036854775808, "selected": []}', JSON, 400, "'unit' must be an integer from 0"),
    ("select", '{"unit": 2147483648, "selected": []}', JSON, 400, "'unit'.*2147483647"),
    ("select", '{"unit": -1, "selected": []}', JSON, 400, "'unit'.*got -1"),
    ("select", '{"unit": 1.5, "selected": []}', JSON, 400, "'unit'.*got 1.5"),
    ("select", '{"unit": "0", "selected": []}', JSON, 400, "'unit'.*got '0'"),
    ("select", '{"unit": true, "selected": []}', JSON, 400, "'unit'.*got True"),
    ("select", '{"unit": null, "selected": []}', JSON, 400, "'unit'.*got None"),
    ("select", '{"selected": []}', JSON, 400, "'unit'"),
    ("select", '{"unit": NaN, "selected": []}', JSON, 400, "'unit'.*nan"),
    ("select", '{"unit": 1e400, "selected": []}', JSON, 400, "'unit'.*inf"),
    ("select", '{"unit": ' + "9" * 5000 + "}", JSON, 400, "not valid JSON"),
    ("select", '{"unit": {U}, "selected": [], "response_ms": 9223372036854775808}', JSON, 400, "'response_ms'"),
    ("select", '{"unit": {U}, "selected": [], "response_ms": -5}', JSON, 400, "'response_ms'.*got -5"),
    ("select", '{"unit": {U}, "selected": [], "response_ms": "slow"}', JSON, 400, "'response_ms'"),
    ("select", _nested(30_000), JSON, 400, "nests deeper than 4"),
    ("select", '{"unit": {U}, "selected": ' + _nested(40) + "}", JSON, 400, "nests deeper than 4"),
    # brackets inside a string do not count as nesting
    ("select", '{"unit": {U}, "selected": ["' + "[" * 100 + '"]}', JSON, 400, "'selected' holds"),
    ("select", "[1, 2]", JSON, 400, "JSON object"),
    ("select", '"unit"', JSON, 400, "JSON object"),
    ("select", "{not json", JSON, 400, "not valid JSON"),
    ("select", "", JSON, 400, "not valid JSON"),
    ("select", b'{"unit": 0, "selected": ["\xff\xfe"]}', JSON, 400, "UTF-8"),
    ("select", "unit=1", "application/x-www-form-urlencoded", 400, "Content-Type: application/json"),
    ("select", '{"unit": 0}', "text/plain", 400, "Content-Type"),
    ("select", '{"unit": 0, "selected": []}', None, 400, "Content-Type"),
    ("select", '{"unit": {U}, "selected": "all"}', JSON, 400, "'selected' must be a list"),
    ("select", '{"unit": {U}}', JSON, 400, "'selected' must be a list"),
    ("select", '{"unit": {U}, "selected": [1]}', JSON, 400, "'selected' holds 1"),
    ("select", '{"unit": {U}, "selected": ["../../etc/passwd"]}', JSON, 400, "'selected' holds '../../etc"),
    ("select", '{"unit": {U}, "selected": ["' + "a" * 100_000 + '"]}', JSON, 413, "larger than the limit of 65536"),
    ("select", '{"unit": {U}, "selected": [' + ",".join(['"%016x"' % i for i in range(1001)]) + "]}", JSON, 400,
     "at most 1000"),
    ("select", '{"unit": {U}, "selected": ["%s", "%s"]}' % (VALID, VALID), JSON, 400, "'selected' lists an image"),
    ("select", '{"unit": {U}, "selected": [], "skipped": "x"}', JSON, 400, "'skipped' must be a list"),
    ("select", '{"unit": {U}, "selected": [], "skipped": [{}]}', JSON, 400, "'skipped' holds {}"),
    ("select", '{"unit": {U}, "selected": ["%s"]}' % VALID, JSON, 404, "unknown image id"),
    ("select", '{"unit": {U}, "selected": [], "skipped": ["%s"]}' % VALID, JSON, 404, "unknown image id"),
    ("select", '{"unit": 999, "selected": []}', JSON, 404, "no unit 999"),
    ("timed", '{"unit": {U}, "item": 5, "answer": "real"}', JSON, 400, "'item' \\(an image id\\)"),
    ("timed", '{"unit": {U}, "item": "x", "answer": "real"}', JSON, 400, "'item' \\(an image id\\)"),
    ("timed", '{"unit": {U}, "item": "%s", "answer": ["real"]}' % VALID, JSON, 400, "'answer' in"),
    ("timed", '{"unit": {U}, "item": "%s"}' % VALID, JSON, 400, "'answer' in"),
    ("timed", '{"unit": {U}, "item": "%s", "answer": "real"}' % VALID, JSON, 404, "unknown image id"),
    ("timed", '{"unit": {U}, "skipped": []}', JSON, 400, "'answer' in"),
]


@pytest.mark.parametrize("task,body,content_type,status,match", MALFORMED_ANSWERS,
                         ids=[f"{i}-{case[3]}" for i, case in enumerate(MALFORMED_ANSWERS)])
def test_malformed_answers_get_4xx_naming_the_field(shared_app, task, body, content_type, status, match):
    client, db = shared_app(task)
    unit = client.get("/api/next").get_json()["unit"]
    before = _counts(db)
    if isinstance(body, str):
        body = body.replace("{U}", str(unit)).encode("utf-8")
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/api/answer", data=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.is_json
    assert re.search(match, response.get_json()["error"]), response.get_json()["error"]
    assert _counts(db) == before


# (method, path, request options, status, what the message must name)
MALFORMED_REQUESTS = [
    ("POST", "/login", {"data": {"rater": "a" * 65, "code": "x"}}, 400, "rater name"),
    ("POST", "/login", {"data": {"rater": "ana\nben", "code": "x"}}, 400, "rater name"),
    ("POST", "/login", {"data": {"rater": "ana", "code": "x" * 70_000}}, 413, "larger than the limit"),
    ("POST", "/login", {"data": {"rater": "ana"}}, 401, "access code"),
    ("POST", "/login", {"data": "\xff\xfe", "content_type": "application/x-www-form-urlencoded"}, 400, "rater name"),
    ("GET", "/image/" + "f" * 16, {}, 404, "unknown image"),
    ("GET", "/image/" + "x" * 5000, {}, 404, "unknown image"),
    ("GET", "/no/such/page", {}, 404, "not found"),
    ("POST", "/api/next", {}, 405, "method not allowed"),
    ("GET", "/", {"headers": {"Host": "evil.example"}}, 400, "Host 'evil.example' is not served here"),
    ("GET", "/", {"headers": {"Host": "127.0.0.1.evil.example:8765"}}, 400, "is not served here"),
    ("GET", "/", {"headers": {"Host": "[::1"}}, 400, "is not served here"),
    ("GET", "/", {"headers": {"Host": "localhost:99999"}}, 400, "is not served here"),
    ("POST", "/api/answer", {"json": {"unit": 0, "selected": []}, "headers": {"Origin": "http://evil.example"}},
     403, "cross-site request refused: Origin 'http://evil.example'"),
    ("POST", "/api/answer", {"json": {"unit": 0, "selected": []}, "headers": {"Origin": "null"}}, 403,
     "Origin 'null'"),
    ("POST", "/api/answer", {"json": {"unit": 0, "selected": []}, "headers": {"Sec-Fetch-Site": "cross-site"}},
     403, "Sec-Fetch-Site is 'cross-site'"),
    ("POST", "/logout", {"headers": {"Sec-Fetch-Site": "same-site"}}, 403, "Sec-Fetch-Site is 'same-site'"),
]


@pytest.mark.parametrize("method,path,options,status,match", MALFORMED_REQUESTS,
                         ids=[f"{i}-{case[3]}" for i, case in enumerate(MALFORMED_REQUESTS)])
def test_malformed_requests_get_4xx_naming_the_problem(shared_app, method, path, options, status, match):
    client, db = shared_app("select")
    before = _counts(db)
    response = client.open(path, method=method, **options)
    assert response.status_code == status
    text = response.get_json()["error"] if response.is_json else response.get_data(as_text=True)
    assert re.search(match, text), text[:300]
    assert _counts(db) == before
    assert client.get("/api/next").status_code == 200  # the session survived the refusal


def test_unreadable_images_are_skipped_for_the_rater_and_logged(app_factory, tmp_path, caplog):
    app = app_factory(task="timed")
    client = app.test_client()
    _login(client)
    first = client.get("/api/next").get_json()
    db = str(tmp_path / "study.sqlite")
    with StudyStore(db) as store:
        path = store.item(first["items"][0])["path"]
    os.remove(path)  # deleted after the server started
    with caplog.at_level(logging.ERROR, logger="dermdiff.study.app"):
        response = client.get(f"/image/{first['items'][0]}")
    assert response.status_code == 410 and "cannot be read" in response.get_json()["error"]
    assert any(first["items"][0] in record.getMessage() and os.path.basename(path) in record.getMessage()
               and "ana" in record.getMessage() for record in caplog.records)
    after = client.get("/api/next").get_json()
    assert after["unit"] != first["unit"] and (after["answered"], after["total"]) == (1, first["total"])
    # a damaged file (not an image, or cut short) is skipped the same way; nothing is cached from before
    with StudyStore(db) as store:
        broken = store.item(after["items"][0])["path"]
    with open(broken, "rb") as handle:
        head = handle.read(200)
    with open(broken, "wb") as handle:
        handle.write(head)
    assert client.get(f"/image/{after['items'][0]}").status_code == 410
    # a skip the browser reports (the image would not display) moves on too; a replay is a 409
    third = client.get("/api/next").get_json()
    assert third["answered"] == 2
    skipped = client.post("/api/answer", json={"unit": third["unit"], "skipped": third["items"]})
    assert skipped.status_code == 201 and skipped.get_json()["answered"] == 3
    assert client.post("/api/answer", json={"unit": third["unit"], "skipped": third["items"]}).status_code == 409
    assert client.post("/api/answer", json={"unit": first["unit"], "item": first["items"][0],
                                            "answer": "real"}).status_code == 409
    with StudyStore(db) as store:
        assert store.count("answers") == 0 and store.count("skipped") == 3
    other = app.test_client()  # another rater still gets every image in their plan
    _login(other, "ben", "secret-ben")
    assert other.get("/api/next").get_json()["total"] == first["total"]
    out = tmp_path / "export"
    assert cli_main(["study", "export", "--db", db, "--out", str(out)]) == 0
    assert "3 image(s) could not be shown" in (out / "summary.md").read_text()


def test_grid_page_with_a_broken_image_is_answered_without_it(app_factory, tmp_path):
    client = app_factory().test_client()
    _login(client)
    state = client.get("/api/next").get_json()
    gone, *rest = state["items"]
    with StudyStore(str(tmp_path / "study.sqlite")) as store:
        os.remove(store.item(gone)["path"])
    assert client.get(f"/image/{gone}").status_code == 410
    assert client.get("/api/next").get_json()["items"] == rest
    bad = client.post("/api/answer", json={"unit": state["unit"], "selected": [gone]})
    assert bad.status_code == 400 and "needs an answer for each of its 3 images" in bad.get_json()["error"]
    both = client.post("/api/answer", json={"unit": state["unit"], "selected": rest[:1], "skipped": rest[:1]})
    assert both.status_code == 400 and "both answered and skipped" in both.get_json()["error"]
    answered = client.post("/api/answer", json={"unit": state["unit"], "selected": rest[:1], "skipped": [gone]})
    assert answered.status_code == 201
    with StudyStore(str(tmp_path / "study.sqlite")) as store:
        rows = store.answer_rows()
    assert sorted(row["item_id"] for row in rows) == sorted(rest)
    assert [row["answer"] for row in rows if row["item_id"] == rest[0]] == ["selected"]


def test_host_allow_list(app_factory):
    client = app_factory(hosts=allowed_hosts("10.1.2.3", ["studybox.lan"])).test_client()
    for host in ("localhost", "127.0.0.1:8765", "[::1]:8765", "LOCALHOST", "10.1.2.3:80", "studybox.lan"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    for host in ("studybox.lan.evil.example", "10.1.2.4", "evil.example"):
        response = client.get("/", headers={"Host": host})
        assert response.status_code == 400 and "studybox.lan" in response.get_json()["error"]
    assert allowed_hosts("0.0.0.0") == {"localhost", "127.0.0.1", "::1"}


def test_cross_site_login_and_logout_are_refused(app_factory, tmp_path):
    client = app_factory().test_client()
    db = str(tmp_path / "study.sqlite")
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://localhost", "Sec-Fetch-Site": "same-site"}):
        response = client.post("/login", data={"rater": "ben", "code": "secret-ben"}, headers=headers)
        assert response.status_code == 403 and "cross-site" in response.get_json()["error"]
        assert client.get_cookie("dermdiff_study") is None
    assert _counts(db)[0]["sessions"] == 0
    own = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/login", data={"rater": "ana", "code": "secret-ana"}, headers=own).status_code == 303
    assert client.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/api/next").status_code == 200  # still logged in
    assert client.post("/logout", headers=own).status_code == 303
    assert client.get("/api/next").status_code == 401


def test_sessions_expire(app_factory, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(time=lambda: now[0]))
    client = app_factory(session_hours=2).test_client()
    response = _login(client)
    assert "Max-Age=7200" in response.headers["Set-Cookie"]
    now[0] += 2 * 3600 - 1
    assert client.get("/api/next").status_code == 200
    now[0] += 2
    assert client.get("/api/next").status_code == 401
    assert _login(client).status_code == 303 and client.get("/api/next").status_code == 200
    with pytest.raises(ValueError, match="session_hours"):
        app_factory(session_hours=0)


def test_access_code_guessing_is_rate_limited(app_factory, tmp_path):
    client = app_factory(max_login_failures=3).test_client()
    for _ in range(3):
        assert _login(client, "ana", "guess").status_code == 403
    limited = _login(client, "ana", "secret-ana")  # even the right code waits
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert "Too many wrong access codes for ana" in limited.get_data(as_text=True)
    assert _login(client, "ben", "secret-ben").status_code == 303  # another rater is not locked out
    # per address: 4 x 3 failures from one address, whatever the rater names, lock the address
    for index in range(9):
        assert _login(client, f"eve{index}", "guess").status_code == 403
    assert _login(client, "ben", "secret-ben").status_code == 429
    assert _counts(str(tmp_path / "study.sqlite"))[0]["sessions"] == 1


def test_attempt_limiter_window_and_bounded_memory():
    now = [0.0]
    limiter = AttemptLimiter(limit=2, window_s=60, clock=lambda: now[0])
    limiter.failed("ana")
    now[0] = 10
    assert limiter.retry_after("ana") == 0
    limiter.failed("ana")
    assert limiter.retry_after("ana") == pytest.approx(50)
    now[0] = 60.5
    assert limiter.retry_after("ana") == 0  # the first failure left the window
    limiter.MAX_KEYS = 5
    for index in range(20):
        limiter.failed(f"r{index}")
    assert len(limiter._failures) <= 5
    with pytest.raises(ValueError, match="limit"):
        AttemptLimiter(limit=0, window_s=1)


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth('{"a": [1, {"b": "[[[[["}]}', 10) == 3
    assert json_depth(_nested(30_000), 4) == 5  # stops counting past the limit
    assert json_depth('"\\"[[["', 4) == 0


def _foreign_db(path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO patients (name) VALUES ('x')")
    conn.close()


def _bad_db(tmp_path, kind: str):
    """A `--db` path of one bad kind, and its bytes (None when it is no file) to check it stays untouched."""
    db = tmp_path / "other.sqlite"
    if kind == "foreign":
        _foreign_db(db)
    elif kind == "empty":
        db.write_bytes(b"")
    elif kind == "text":
        db.write_text("name,label\na.png,mel\n" * 100)
    elif kind == "folder":
        db.mkdir()
    elif kind == "missing-folder":
        db = tmp_path / "nowhere" / "study.sqlite"
    return db, (db.read_bytes() if db.is_file() else None)


@pytest.mark.parametrize("kind,rc,match", [  # 1: the file's content is wrong; 2: the path is
    ("foreign", 1, "not a dermdiff study database \\(it holds other tables: patients\\)"),
    ("empty", 1, "not a dermdiff study database \\(it holds no tables\\)"),
    ("text", 1, "is not an SQLite file"),
    ("folder", 2, "is a folder"),
    ("missing", 2, "does not exist"),
    ("missing-folder", 2, "does not exist"),
])
def test_study_export_refuses_a_database_that_is_not_a_study(tmp_path, capsys, kind, rc, match):
    db, before = _bad_db(tmp_path, kind)
    assert cli_main(["study", "export", "--db", str(db), "--out", str(tmp_path / "out")]) == rc
    err = capsys.readouterr().err
    assert re.search(match, err) and str(db) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    if before is not None:
        assert db.read_bytes() == before  # no tables added, journal mode untouched
        assert not os.path.exists(f"{db}-wal")
    if kind == "foreign":
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        conn.close()


@pytest.mark.parametrize("kind,extra,rc,match", [
    ("foreign", [], 1, "not a dermdiff study database"),
    ("text", [], 1, "not an SQLite file"),
    ("folder", [], 2, "is a folder"),
    ("missing-folder", [], 2, "does not exist"),
    ("ok", ["--session-hours", "0"], 2, "--session-hours must be"),
    ("ok", ["--host", "0.0.0.0", "--access-codes", CODES], 2, "--allowed-hosts"),
    ("ok", ["--port", "70000"], 2, "--port"),
])
def test_study_serve_refuses_bad_databases_and_flags(folders, tmp_path, capsys, kind, extra, rc, match):  # noqa: F811
    db, before = _bad_db(tmp_path, kind)
    code = cli_main(["study", "serve", "--real", folders[0], "--synthetic", folders[1], "--db", str(db), *extra])
    err = capsys.readouterr().err
    assert code == rc and match in err and "Traceback" not in err
    if before is not None:
        assert db.read_bytes() == before


def test_store_refuses_foreign_database_directly(tmp_path):
    db = tmp_path / "foreign.sqlite"
    _foreign_db(db)
    for create in (True, False):
        with pytest.raises(ValueError, match="patients"):
            StudyStore(str(db), create=create)
    fresh = tmp_path / "new.sqlite"
    with StudyStore(str(fresh)) as store:  # a new file becomes a study
        assert store.count("skipped") == 0
    with StudyStore(str(fresh), create=False) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    older = tmp_path / "schema1.sqlite"  # a study written before `skipped` existed gains the table
    with sqlite3.connect(older) as conn:
        conn.executescript(store_module._SCHEMA)
    conn.close()
    with StudyStore(str(older), create=False) as store:
        assert store.count("skipped") == 0 and store.count("answers") == 0


@pytest.mark.parametrize("flag,match", [
    ("--access-codes", "codes.txt is not UTF-8 text"),
    ("--condition-names", "codes.txt is not UTF-8 text"),
    ("--real", "metadata.csv is not UTF-8 text"),
])
def test_study_serve_names_undecodable_files(folders, tmp_path, capsys, flag, match):  # noqa: F811
    undecodable = b"\xff\xfeana:secret-ana\n"
    (tmp_path / "codes.txt").write_bytes(undecodable)
    real = folders[0]
    if flag == "--real":
        real = str(tmp_path / "badmeta")
        os.makedirs(real)
        (tmp_path / "badmeta" / "metadata.csv").write_bytes(undecodable)
    extra = [] if flag == "--real" else [flag, str(tmp_path / "codes.txt")]
    code = cli_main(["study", "serve", "--real", real, "--synthetic", folders[1], "--db", str(tmp_path / "s.sqlite"),
                     *extra])
    err = capsys.readouterr().err
    assert code == 1 and match in err and "Traceback" not in err and "UnicodeDecodeError" not in err
