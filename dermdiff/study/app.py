"""The study's web app (Flask): login, one page that drives the task, a small JSON API.

Blinding: images are addressed by opaque random ids, re-encoded to PNG (no EXIF, no file format or
name that could tell real from synthetic) and fitted into the same box; the page never contains a
source, a path or a label other than the prompted condition. A rater only reaches the images of
their own plan. Every request but login needs the rater's session cookie (HttpOnly, SameSite=Strict,
expiring after `session_hours`); answers must be JSON, which a cross-site form cannot send. The app
answers only to its own host names, refuses cross-site POSTs and slows down access-code guessing
(`guards.py`). Malformed input gets a 4xx JSON error naming what is wrong, never a 500; an image that
cannot be read is skipped for that rater and logged.
"""

from __future__ import annotations

import functools
import hmac
import io
import logging
import os
import re

from flask import Flask, g, jsonify, redirect, render_template, request, send_file
from werkzeug.exceptions import HTTPException

from ..errors import DataError
from .guards import (
    LOOPBACK_NAMES,
    MAX_BODY_BYTES,
    AttemptLimiter,
    cross_site_reason,
    host_name,
    parse_json_body,
)
from .items import scan_folder
from .plan import TASKS, plan_units
from .store import TIMED_ANSWERS, StudyError, StudyStore

logger = logging.getLogger(__name__)

COOKIE = "dermdiff_study"
RATER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ITEM_PATTERN = re.compile(r"^[0-9a-f]{16}$")
MAX_UNIT = 2**31 - 1  # SQLite integers stop at 2**63 - 1; no plan comes near either
MAX_IDS = 1000  # image ids in one answer (a page holds at most `grid` of them)
_PROMPTS = {
    "select": "Select every image that you believe is a real photograph, then submit the page.",
    "condition": "Select every image that shows the condition below, then submit the page.",
    "timed": "Each image is shown briefly. Was it a real photograph or a synthetic image?",
}


def parse_pairs(text: str | None) -> dict[str, str] | None:
    """Read `key:value` pairs from a comma-separated string or from a file (one pair per line, `#` comments)."""
    if not text:
        return None
    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as handle:
                entries = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
        except UnicodeDecodeError as error:
            raise DataError(f"{text} is not UTF-8 text (byte {error.start}: {error.reason})") from None
    else:
        entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    pairs = {}
    for entry in entries:
        key, sep, value = entry.partition(":")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"expected key:value pairs, got {entry!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_access_codes(text: str | None) -> dict[str, str] | None:
    """`rater:code` pairs (see `parse_pairs`); rater names as on the login form, codes of 4+ characters."""
    codes = parse_pairs(text)
    for rater, code in (codes or {}).items():
        if not RATER_PATTERN.match(rater) or len(code) < 4:
            raise ValueError(f"access codes are rater:code pairs (rater [A-Za-z0-9_.-], code >= 4 chars), got {rater!r}")
    return codes


FITS = ("crop", "contain")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bounded_int(payload: dict, name: str, low: int, high: int, required: bool = False) -> int | None:
    """`payload[name]` as an integer in `low..high` (None if absent and optional); else a 400 naming it."""
    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise StudyError(f"{name!r} must be an integer from {low} to {high}, got {_short(value)}")
    return value


def _item_ids(payload: dict, name: str, required: bool = False) -> list[str]:
    """`payload[name]` as a list of distinct image ids (empty if absent and optional); else a 400 naming it."""
    value = payload.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or len(value) > MAX_IDS:
        raise StudyError(f"{name!r} must be a list of at most {MAX_IDS} image ids, got {_short(value)}")
    for item_id in value:
        if not isinstance(item_id, str) or not ITEM_PATTERN.match(item_id):
            raise StudyError(f"{name!r} holds {_short(item_id)}, which is not an image id (16 hex digits)")
    if len(set(value)) != len(value):
        raise StudyError(f"{name!r} lists an image twice")
    return value


def _unreadable_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    # What Pillow raises for missing, damaged, truncated or oversized files (the last is not an OSError).
    return OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError


_UNREADABLE = _unreadable_errors()


@functools.lru_cache(maxsize=256)
def _png_bytes(path: str, mtime: float, size: int, fit: str) -> bytes:
    """The image as served: RGB PNG, `size` pixels on its longest side (a centred square with `crop`)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = image.convert("RGB")
        if size and fit == "crop":
            image = ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS)
        elif size:
            scale = size / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def create_app(
    db: str,
    real: str,
    synthetic: str,
    task: str = "select",
    access_codes: dict[str, str] | None = None,
    view_seconds: float = 2.5,
    seed: int = 0,
    grid: int = 12,
    items_per_rater: int | None = None,
    image_size: int = 384,
    condition_names: dict[str, str] | None = None,
    fit: str = "crop",
    hosts: frozenset[str] | tuple[str, ...] = LOOPBACK_NAMES,
    session_hours: float = 12.0,
    max_login_failures: int = 5,
    login_window_s: float = 300.0,
) -> Flask:
    """Build the study app for one task over the images of two folders.

    Args:
        db (`str`): SQLite file holding plans and answers (created if missing; reused to resume).
        real (`str`), synthetic (`str`): image folders, labelled by their `metadata.csv` if present.
        task (`str`, defaults to `"select"`): `"select"`, `"condition"` or `"timed"`.
        access_codes (`dict`, *optional*): rater -> code; without it anyone may join under a name.
        view_seconds (`float`, defaults to 2.5): how long the timed task shows each image (0.5..30).
        seed (`int`, defaults to 0): seeds every rater's shuffle.
        grid (`int`, defaults to 12): images per page in the grid tasks.
        items_per_rater (`int`, *optional*): a random subset of this size per rater.
        image_size (`int`, defaults to 384): side of the served images, real and synthetic alike, so
            their pixel size cannot give the source away (0 serves the original size).
        fit (`str`, defaults to `"crop"`): `"crop"` = centred square crop (like ROI-centred study images),
            `"contain"` = keep the aspect ratio, longest side = `image_size`.
        condition_names (`dict`, *optional*): label -> name shown in the `condition` prompt
            (e.g. `{"mel": "Melanoma"}`); otherwise the label with `_` as spaces.
        hosts (`tuple`, defaults to the loopback names): host names the app answers to (the `Host`
            header); see `guards.allowed_hosts` for what `dermdiff study serve` passes.
        session_hours (`float`, defaults to 12): a login is valid this long, then the rater logs in again.
        max_login_failures (`int`, defaults to 5): wrong access codes allowed per rater within
            `login_window_s` seconds (4x that per client address) before attempts get 429.

    Example:
        >>> app = create_app("study.sqlite", "data/real", "samples", task="timed")  # doctest: +SKIP
        >>> app.test_client().get("/").status_code  # doctest: +SKIP
        200
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not 0.5 <= view_seconds <= 30:
        raise ValueError(f"view_seconds must be between 0.5 and 30, got {view_seconds}")
    if not 0 <= image_size <= 4096:
        raise ValueError(f"image_size must be between 0 (keep) and 4096, got {image_size}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if not 0 < session_hours <= 24 * 365:
        raise ValueError(f"session_hours must be > 0 and at most a year (8760), got {session_hours}")
    session_s = session_hours * 3600
    hosts = frozenset(name.lower() for name in hosts)
    rater_failures = AttemptLimiter(max_login_failures, login_window_s)
    address_failures = AttemptLimiter(4 * max_login_failures, login_window_s)
    images = scan_folder(real, "real") + scan_folder(synthetic, "synthetic")
    with StudyStore(db) as store:
        store.add_images(images)
        study_items = store.items(paths={image.path for image in images})
    plan_units(task, study_items, "check", seed=seed, grid=grid, items_per_rater=items_per_rater)  # fail early

    app = Flask(__name__)
    app.config.update(STUDY_DB=db, STUDY_TASK=task, MAX_CONTENT_LENGTH=MAX_BODY_BYTES)

    def store() -> StudyStore:
        if "study_store" not in g:
            g.study_store = StudyStore(db)
        return g.study_store

    @app.teardown_appcontext
    def close_store(_error=None):
        opened = g.pop("study_store", None)
        if opened is not None:
            opened.close()

    def current_rater() -> str | None:
        rater = store().rater_for_token(request.cookies.get(COOKIE), max_age_s=session_s)
        if rater is not None and access_codes is not None and rater not in access_codes:
            return None
        return rater

    def fail(status: int, message: str):
        return jsonify(error=message), status

    def require_rater(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            rater = current_rater()
            if rater is None:
                return fail(401, "log in first: no valid study session")
            return view(rater, *args, **kwargs)

        return wrapped

    def make_units(rater: str):
        return plan_units(task, study_items, rater, seed=seed, grid=grid, items_per_rater=items_per_rater)

    @app.errorhandler(StudyError)
    def study_error(error: StudyError):
        return fail(error.status, str(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code == 413:
            return fail(413, f"the request body is larger than the limit of {MAX_BODY_BYTES} bytes")
        if error.code in (404, 405):
            return fail(error.code, f"{request.method} {request.path[:80]!r}: {error.name.lower()}")
        return fail(error.code or 400, error.description or error.name)

    @app.before_request
    def refuse_foreign_requests():
        name = host_name(request.host)
        if name not in hosts:
            return fail(400, f"Host {request.host[:80]!r} is not served here (allowed: {', '.join(sorted(hosts))})")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            reason = cross_site_reason(request.headers, request.host_url.rstrip("/"))
            if reason:
                return fail(403, f"cross-site request refused: {reason}")
        return None

    @app.after_request
    def headers(response):
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        # same-origin: no Referer ever leaves the app, and its own POSTs keep a real Origin (not "null")
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/")
    def index():
        rater = current_rater()
        if rater is None:
            return render_template("login.html", codes=access_codes is not None, error=None)
        return render_template("study.html", rater=rater, task=task, intro=_PROMPTS[task], view_seconds=view_seconds)

    @app.post("/login")
    def login():
        rater = (request.form.get("rater") or "").strip()
        code = request.form.get("code") or ""
        status, error = 200, None
        address = request.remote_addr or "unknown"
        wait = max(rater_failures.retry_after(rater), address_failures.retry_after(address))
        if not RATER_PATTERN.match(rater):
            status, error = 400, "Enter your rater name (letters, digits, . _ -)."
        elif access_codes is not None and wait > 0:
            status = 429
            error = f"Too many wrong access codes for {rater} or from {address}: try again in {wait:.0f} s."
        elif access_codes is not None and not code:
            status, error = 401, "This study needs your access code."
        elif access_codes is not None and not hmac.compare_digest(
            access_codes.get(rater, "\0").encode("utf-8"), code.encode("utf-8")
        ):
            rater_failures.failed(rater)
            address_failures.failed(address)
            status, error = 403, "Unknown rater or wrong access code."
        if error:
            page = render_template("login.html", codes=access_codes is not None, error=error, rater=rater)
            headers = {"Retry-After": str(max(1, round(wait)))} if status == 429 else {}
            return page, status, headers
        response = redirect("/", code=303)
        response.set_cookie(COOKIE, store().create_session(rater, max_age_s=session_s), max_age=int(session_s),
                            httponly=True, samesite="Strict", path="/")
        return response

    @app.post("/logout")
    def logout():
        token = request.cookies.get(COOKIE)
        if token:
            store().delete_session(token)
        response = redirect("/", code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    def next_payload(rater: str) -> dict:
        store().ensure_plan(rater, task, functools.partial(make_units, rater))
        index, answered, total = store().progress(rater, task)
        payload = {"task": task, "answered": answered, "total": total, "view_seconds": view_seconds}
        if index is None:
            return {**payload, "finished": True}
        unit = store().unit(rater, task, index)
        label = None
        if unit.prompt is not None:
            label = (condition_names or {}).get(unit.prompt, unit.prompt.replace("_", " "))
        return {**payload, "finished": False, "unit": index, "prompt": unit.prompt, "prompt_label": label,
                "items": list(unit.item_ids)}

    @app.get("/favicon.ico")
    def favicon():
        return "", 204

    @app.get("/api/next")
    @require_rater
    def api_next(rater: str):
        return jsonify(next_payload(rater))

    @app.post("/api/answer")
    @require_rater
    def api_answer(rater: str):
        payload = parse_json_body(request.get_data(cache=False), request.content_type)
        if not isinstance(payload, dict):
            return fail(400, "the body must be a JSON object")
        index = _bounded_int(payload, "unit", 0, MAX_UNIT, required=True)
        response_ms = _bounded_int(payload, "response_ms", 0, 3_600_000)
        skipped = _item_ids(payload, "skipped")
        unit = store().unit(rater, task, index)
        if unit is None:
            return fail(404, f"no unit {index} in your plan")
        if task == "timed":
            item, answer = payload.get("item"), payload.get("answer")
            if skipped and answer is None:
                answers = {}
            elif not isinstance(item, str) or not ITEM_PATTERN.match(item) or answer not in TIMED_ANSWERS:
                return fail(400, f"a timed answer needs 'item' (an image id) and 'answer' in {TIMED_ANSWERS}"
                                 " (or 'skipped': [image id])")
            else:
                answers = {item: answer}
        else:
            selected = _item_ids(payload, "selected", required=True)
            answers = {item_id: "unselected" for item_id in unit.item_ids if item_id not in skipped}
            for item_id in selected:
                answers[item_id] = "selected"
        store().record_answer(rater, task, index, answers, response_ms=response_ms, skipped=tuple(skipped))
        if skipped:
            logger.warning("rater %s: the browser could not show image(s) %s of %s unit %d; skipped for them",
                           rater, ", ".join(skipped), task, index)
        return jsonify(next_payload(rater)), 201

    @app.get("/image/<item_id>")
    @require_rater
    def image(rater: str, item_id: str):
        row = store().item(item_id) if ITEM_PATTERN.match(item_id) else None
        if row is None or not store().rater_may_see(rater, item_id):
            return fail(404, "unknown image")
        try:
            data = _png_bytes(row["path"], os.path.getmtime(row["path"]), image_size, fit)
        except _UNREADABLE as error:
            reason = f"cannot be read: {type(error).__name__}: {error}"
            logger.error("image %s (%s) %s; skipped for rater %s", item_id, row["path"], reason, rater)
            store().skip_item(rater, task, item_id, reason[:500])
            return fail(410, f"image {item_id} cannot be read on the server; it is skipped for you")
        response = send_file(io.BytesIO(data), mimetype="image/png", max_age=0)
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    return app


def serve(app: Flask, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the app on a threaded WSGI server (one thread per request) until interrupted."""
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)
    print(f"dermdiff study ({app.config['STUDY_TASK']}) on http://{host}:{server.server_port}/ "
          f"- answers in {app.config['STUDY_DB']}; Ctrl+C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
