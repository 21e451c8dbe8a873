"""The bad-input corpus: one `Case` per user mistake, how to run it, and how to judge what came out.

A case runs in-process (fast): a `dermdiff` command line through `dermdiff.cli.main`, a training
script through its `parse_args` + `main` exactly as its `__main__` does (`dermdiff.errors.run_script`),
or a library call that must raise. Its outcome is one of

- clear: the expected exit status (or exception type), one stderr line naming the offending thing;
- vague: it failed, but the line does not name the thing (or the status / type is not the expected one);
- traceback: an exception that is not a user error escaped, or a traceback was printed;
- silent-wrong: it succeeded (exit status 0, or no exception).

Used by `tests/test_bad_inputs.py` (every case must be clear) and `benchmarks/bad_input_outcomes.py`
(the counts).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import traceback
from dataclasses import dataclass
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Case:
    """One bad input.

    Args:
        id (`str`): a unique name.
        kind (`str`): "cli" (argv of `dermdiff`), a training script's name (its argv), or "call".
        build (`Callable`): workspace -> argv (`list[str]`), or for "call" a zero-argument callable.
        expect (`int` or exception type): the exit status, or for "call" the exception type.
        match (`str`): a regex the error line (or exception message) must contain.
    """

    id: str
    kind: str
    build: Callable
    expect: object
    match: str


@dataclass
class Outcome:
    status: int | None  # exit status, None for a call
    error: BaseException | None  # the exception a call raised, or one that escaped
    text: str  # stderr (or the exception message for a call)
    printed_traceback: bool


_SCRIPTS: dict = {}


def load_script(name: str):
    """A training script as a module (imported once), e.g. `load_script("train_dermgan")`."""
    if name not in _SCRIPTS:
        path = os.path.join(ROOT, "training", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"{name}_bad_input_script", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[name] = module
    return _SCRIPTS[name]


def run_case(case: Case, workspace) -> Outcome:
    """Runs one case in-process, capturing stderr; never raises (an escaped exception is recorded)."""
    from dermdiff.cli import main
    from dermdiff.errors import run_script

    err = io.StringIO()
    status, error = None, None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if case.kind == "call":
                case.build(workspace)()
            elif case.kind == "cli":
                status = main(case.build(workspace))
            else:
                script = load_script(case.kind)
                status = run_script(script.parse_args, script.main, case.build(workspace))
        except SystemExit as stop:  # argparse's usage errors
            status = stop.code if isinstance(stop.code, int) else 1
        except Exception as raised:  # noqa: BLE001 - recorded and judged below
            error = raised
            if case.kind != "call":
                traceback.print_exc(file=err)
    text = err.getvalue()
    if case.kind == "call" and error is not None:
        text = str(error)
    return Outcome(status, error, text, "Traceback (most recent call last)" in err.getvalue())


def classify(case: Case, outcome: Outcome) -> str:
    """clear / vague / traceback / silent-wrong (see the module docstring)."""
    from dermdiff.errors import USER_ERRORS

    if outcome.printed_traceback:
        return "traceback"
    if case.kind == "call":
        if outcome.error is None:
            return "silent-wrong"
        if not isinstance(outcome.error, USER_ERRORS):
            return "traceback"
        named = re.search(case.match, outcome.text) is not None
        return "clear" if named and isinstance(outcome.error, case.expect) else "vague"
    if outcome.status == 0:
        return "silent-wrong"
    lines = [line for line in outcome.text.strip().splitlines() if line.strip()]
    named = len(lines) == 1 and re.search(case.match, lines[0]) is not None
    return "clear" if named and outcome.status == case.expect else "vague"


def describe(case: Case, outcome: Outcome) -> str:
    """What came out, for a failing assertion or the benchmark's listing."""
    if case.kind == "call":
        return f"raised {type(outcome.error).__name__}: {outcome.text[:300]!r}"
    return f"exit {outcome.status}, stderr {outcome.text[-600:]!r}"


# ---------------------------------------------------------------------------------------------------------
# The corpus. `w` is the workspace of `bad_input_fixtures.build_workspace`; its paths are named in the
# messages, so `match` is usually the file's base name or the flag.
USAGE, DATA = 2, 1
CASES: list[Case] = []


def cli(id: str, expect: int, match: str, build: Callable) -> None:
    CASES.append(Case(f"cli-{id}", "cli", build, expect, match))


def script(name: str, id: str, expect: int, match: str, build: Callable) -> None:
    CASES.append(Case(f"{name}-{id}", name, build, expect, match))


def call(id: str, expect, match: str, build: Callable) -> None:
    CASES.append(Case(f"call-{id}", "call", build, expect, match))


def _out(w, name: str) -> str:
    return os.path.join(w.root, "out", name)


# Damaged image files, by workspace attribute -> (exit status, what the line names).
BROKEN_IMAGES = {
    "missing": (USAGE, "missing.png"),
    "truncated": (DATA, "truncated.png"),
    "not_image": (DATA, "not-image.png"),
    "empty": (DATA, "empty.png"),
    "bomb": (DATA, "bomb.png.*(pixels|limit)"),
    "directory": (USAGE, "a-folder"),
}

# 1. dermdiff maps
for name, (code, match) in BROKEN_IMAGES.items():
    cli(f"maps-inspect-{name}", code, match, lambda w, n=name: ["maps", "inspect", getattr(w, n)])
    cli(f"maps-vary-{name}", code, match, lambda w, n=name: ["maps", "vary", getattr(w, n), "--out", _out(w, "v")])
    cli(f"maps-draw-mask-{name}", code, match,
        lambda w, n=name: ["maps", "draw", "--mask", getattr(w, n), "--condition", "mel", "--out", _out(w, "m.png")])
cli("maps-inspect-registry", USAGE, "registry.*nosuch", lambda w: ["maps", "inspect", w.map, "--registry", "nosuch"])
cli("maps-inspect-not-a-map", DATA, "image.png.*registry", lambda w: ["maps", "inspect", w.image])
for scale in (("2", "1"), ("-1", "2"), ("0", "0"), ("nan", "1"), ("1", "inf")):
    cli(f"maps-vary-scale-{'_'.join(scale)}", USAGE, "--scale",
        lambda w, s=scale: ["maps", "vary", w.map, "--registry", "phantom", "--scale", *s, "--out", _out(w, "v")])
for shift in ("-0.5", "nan", "2"):
    cli(f"maps-vary-max-shift-{shift}", USAGE, "--max-shift",
        lambda w, s=shift: ["maps", "vary", w.map, "--registry", "phantom", "--max-shift", s, "--out", _out(w, "v")])
cli("maps-vary-count", USAGE, "--count", lambda w: ["maps", "vary", w.map, "--count", "-3", "--out", _out(w, "v")])
for types in ("1,x", "9", "0,1", ",", "nan", "inf"):
    cli(f"maps-vary-skin-types-{types}", USAGE, "--skin-types",
        lambda w, t=types: ["maps", "vary", w.map, "--registry", "phantom", "--skin-types", t, "--out", _out(w, "v")])
cli("maps-vary-out-is-file", USAGE, "image.png",
    lambda w: ["maps", "vary", w.map, "--registry", "phantom", "--out", w.image])
for box in ("1,2,3", "a,b,c,d", "1,2,3,4,5", "1.5,2,3,4"):
    cli(f"maps-draw-box-{box}", USAGE, "--box",
        lambda w, b=box: ["maps", "draw", "--condition", "mel", "--box", b, "--size", "16", "--out", _out(w, "m.png")])
for box in ("8,8,4,4", "0,0,99,8", "-4,0,8,8"):
    cli(f"maps-draw-box-outside-{box}", USAGE, "box",
        lambda w, b=box: ["maps", "draw", "--condition", "mel", "--box", b, "--size", "16", "--out", _out(w, "m.png")])
cli("maps-draw-no-size", USAGE, "--size", lambda w: ["maps", "draw", "--condition", "mel", "--out", _out(w, "m.png")])
for size in ("0", "-3"):
    cli(f"maps-draw-size-{size}", USAGE, "size",
        lambda w, s=size: ["maps", "draw", "--condition", "mel", "--size", s, "--out", _out(w, "m.png")])
cli("maps-draw-size-three", USAGE, "--size",
    lambda w: ["maps", "draw", "--condition", "mel", "--size", "16", "16", "16", "--out", _out(w, "m.png")])
cli("maps-draw-condition", USAGE, "eczema",
    lambda w: ["maps", "draw", "--condition", "eczema", "--size", "16", "--out", _out(w, "m.png")])
cli("maps-draw-condition-code", USAGE, "99",
    lambda w: ["maps", "draw", "--condition", "99", "--size", "16", "--out", _out(w, "m.png")])
for skin in ("9", "0", "VII", "dark"):
    cli(f"maps-draw-skin-type-{skin}", USAGE, "skin type",
        lambda w, s=skin: ["maps", "draw", "--condition", "mel", "--skin-type", s, "--size", "16",
                           "--box", "1,1,8,8", "--out", _out(w, "m.png")])
cli("maps-draw-registry", USAGE, "nosuch",
    lambda w: ["maps", "draw", "--condition", "mel", "--registry", "nosuch", "--size", "16", "--out", _out(w, "m.png")])
cli("maps-draw-out-in-file", USAGE, "image.png",
    lambda w: ["maps", "draw", "--condition", "mel", "--size", "16", "--box", "1,1,8,8",
               "--out", os.path.join(w.image, "m.png")])
cli("maps-draw-out-format", USAGE, "m.xyz",
    lambda w: ["maps", "draw", "--condition", "mel", "--size", "16", "--box", "1,1,8,8", "--out", _out(w, "m.xyz")])
cli("maps-no-action", USAGE, "ACTION|action", lambda w: ["maps"])


# 2. dermdiff generate
def _generate(w, *extra, pipe=None):
    return ["generate", "--pipeline", pipe or w.pipe, "--steps", "1", "--num-images", "1",
            "--out", _out(w, "gen"), *extra]


DAMAGED_PIPELINES = {
    "no_weights": (DATA, "diffusion_pytorch_model"),
    "truncated_weights": (DATA, "diffusion_pytorch_model.safetensors"),
    "garbage_weights": (DATA, "diffusion_pytorch_model.safetensors"),
    "bad_index": (DATA, "model_index.json"),
    "index_list": (DATA, "model_index.json"),
    "no_unet_config": (DATA, "unet.*config.json"),
    "no_scheduler": (DATA, "scheduler"),
    "missing_tensor": (DATA, "diffusion_pytorch_model.safetensors.*(missing|lacks)"),
    "bad_unet_config": (DATA, "unet.*config.json"),
}
for name, (code, match) in DAMAGED_PIPELINES.items():
    cli(f"generate-pipeline-{name}", code, match, lambda w, n=name: _generate(w, pipe=getattr(w.pipes, n)))
cli("generate-pipeline-missing", USAGE, "nowhere", lambda w: _generate(w, pipe=os.path.join(w.root, "nowhere")))
cli("generate-pipeline-empty-dir", USAGE, "model_index.json", lambda w: _generate(w, pipe=w.empty_dir))
cli("generate-pipeline-is-file", USAGE, "image.png", lambda w: _generate(w, pipe=w.image))
for name, (code, match) in BROKEN_IMAGES.items():
    cli(f"generate-image-{name}", code, match, lambda w, n=name: _generate(w, "--image", getattr(w, n)))
    cli(f"generate-mask-{name}", code, match,
        lambda w, n=name: _generate(w, "--mask", getattr(w, n), "--condition", "melanoma"))
    cli(f"generate-map-{name}", code, match, lambda w, n=name: _generate(w, "--map", getattr(w, n)))
cli("generate-map-and-condition", USAGE, "--map", lambda w: _generate(w, "--map", w.map, "--condition", "melanoma"))
cli("generate-map-not-a-map", DATA, "image.png", lambda w: _generate(w, "--map", w.image))
for device in ("cuda", "cuda:3", "tpu", "mps"):
    cli(f"generate-device-{device}", USAGE, f"--device.*{device}", lambda w, d=device: _generate(w, "--device", d))
for flag, value in (("--num-images", "0"), ("--batch-size", "0"), ("--num-images", "-2"), ("--steps", "0"),
                    ("--steps", "-1"), ("--strength", "0"), ("--strength", "1.5"), ("--strength", "nan")):
    cli(f"generate{flag}-{value}", USAGE, flag.lstrip("-").replace("-", "[-_ ]"),
        lambda w, f=flag, v=value: _generate(w, "--image", w.image, f, v))
for flag, value in (("--num-images", "two"), ("--steps", "1.5"), ("--seed", "x"), ("--scheduler", "heun"),
                    ("--guidance-scale", "big")):
    cli(f"generate{flag}-{value}", USAGE, flag, lambda w, f=flag, v=value: _generate(w, f, v))
cli("generate-condition", USAGE, "eczema", lambda w: _generate(w, "--condition", "eczema"))
cli("generate-condition-code", USAGE, "42", lambda w: _generate(w, "--condition", "42"))
for skin in ("9", "seven"):
    cli(f"generate-skin-type-{skin}", USAGE, "skin type", lambda w, s=skin: _generate(w, "--skin-type", s))
for box in ("1,2,3", "a,b,c,d"):
    cli(f"generate-box-{box}", USAGE, "--box", lambda w, b=box: _generate(w, "--condition", "melanoma", "--box", b))
for box in ("8,8,4,4", "0,0,40,8"):
    cli(f"generate-box-outside-{box}", USAGE, "box", lambda w, b=box: _generate(w, "--condition", "melanoma",
                                                                                  "--box", b))
cli("generate-out-is-file", USAGE, "image.png", lambda w: ["generate", "--pipeline", w.pipe, "--steps", "1",
                                                            "--num-images", "1", "--out", w.image])
cli("generate-strength-without-image", USAGE, "strength", lambda w: _generate(w, "--strength", "0.5"))


# 3. dermdiff evaluate
def _evaluate(w, *extra, data=None):
    return ["evaluate", "--data", data or w.phantom, "--out", _out(w, "eval"), "--quiet", "--no-cache",
            "--extractor", "torchvision:resnet18:random", "--extractor-resolution", "32", "--num-images", "2",
            "--batch-size", "2", "--num-inference-steps", "1", "--trials", "2", "--max-train-images", "4", *extra]


for name in ("no_weights", "truncated_weights", "bad_index", "no_unet_config", "no_scheduler", "missing_tensor"):
    code, match = DAMAGED_PIPELINES[name]
    cli(f"evaluate-pipeline-{name}", code, match,
        lambda w, n=name: _evaluate(w, "--pipeline", getattr(w.pipes, n), "--num-images", "2"))
cli("evaluate-pipeline-missing", USAGE, "nowhere",
    lambda w: _evaluate(w, "--pipeline", os.path.join(w.root, "nowhere")))
cli("evaluate-generated-missing", USAGE, "nowhere",
    lambda w: _evaluate(w, "--generated", os.path.join(w.root, "nowhere")))
cli("evaluate-generated-empty", USAGE, "empty-dir.*metadata.csv", lambda w: _evaluate(w, "--generated", w.empty_dir))
cli("evaluate-data-missing", USAGE, "nowhere",
    lambda w: _evaluate(w, "--pipeline", w.pipe, data=os.path.join(w.root, "nowhere")))
cli("evaluate-data-truncated-npz", DATA, "dermamnist_truncated.npz",
    lambda w: _evaluate(w, "--pipeline", w.pipe, data=w.npz_truncated))
for flag, value in (("--trials", "1"), ("--num-images", "0"), ("--batch-size", "0"), ("--num-sweeps", "-1"),
                    ("--ssim-threshold", "2"), ("--max-train-images", "0"), ("--num-inference-steps", "0"),
                    ("--resolution", "0"), ("--extractor-resolution", "-5")):
    cli(f"evaluate{flag}-{value}", USAGE, flag, lambda w, f=flag, v=value: _evaluate(w, "--pipeline", w.pipe, f, v))
for extractor in ("nosuch", "torchvision:nonet:random", "torchvision:resnet18:/no/such.safetensors",
                  "classifier:/no/such/dir", "inception:/no/such/dir"):
    cli(f"evaluate-extractor-{extractor.split(':')[0]}-{len(extractor)}", USAGE, "extractor|no/such|nonet|nosuch",
        lambda w, e=extractor: _evaluate(w, "--pipeline", w.pipe, "--extractor", e))
cli("evaluate-device-cuda", USAGE, "--device.*cuda", lambda w: _evaluate(w, "--pipeline", w.pipe, "--device", "cuda"))
cli("evaluate-gan-log-bad-json", DATA, "bad.json", lambda w: _evaluate(w, "--pipeline", w.pipe, "--gan-log", w.bad_json))
cli("evaluate-gan-log-missing", USAGE, "missing.png",
    lambda w: _evaluate(w, "--pipeline", w.pipe, "--gan-log", w.missing))
cli("evaluate-classifier-missing", USAGE, "nowhere",
    lambda w: _evaluate(w, "--pipeline", w.pipe, "--classifier", os.path.join(w.root, "nowhere")))
cli("evaluate-reference-split", USAGE, "nosuch",
    lambda w: _evaluate(w, "--pipeline", w.pipe, "--reference-split", "nosuch"))
cli("evaluate-no-source", USAGE, "--pipeline|--generated", lambda w: _evaluate(w))


# 4. dermdiff phantom and demo
def _phantom(w, *extra):
    return ["phantom", "--out", _out(w, "phantom" + "".join(extra)), "--n", "4", "--size", "16", "--quiet", *extra]


for flag, value, match in (
    ("--n", "0", "--n"), ("--n", "-5", "--n"), ("--n", "ten", "--n"), ("--size", "8", "size"),
    ("--size", "0", "size"), ("--size", "x", "--size"), ("--rare", "eczema", "eczema"),
    ("--rare-fraction", "2", "fraction"), ("--rare-fraction", "-0.1", "fraction"), ("--skin-types", "0", "skin type"),
    ("--skin-types", "7", "skin type"), ("--skin-types", "x", "skin type"), ("--healthy-fraction", "1.5", "healthy"),
    ("--healthy-fraction", "-1", "healthy"), ("--healthy-fraction", "nan", "healthy"),
    ("--rare-fraction", "nan", "fraction"), ("--n", str(10**12), "--n|limit"), ("--images-per-lesion", "0", "images.per.lesion"),
    ("--seed", "one", "--seed"),
):
    extra = (flag, value) if flag != "--rare" else ("--rare", value)
    cli(f"phantom{flag}-{value}", USAGE, match, lambda w, e=extra: _phantom(w, *e))
cli("phantom-nothing-to-do", USAGE, "--out", lambda w: ["phantom"])
cli("phantom-out-exists", USAGE, "phantom.*overwrite", lambda w: ["phantom", "--out", w.phantom, "--n", "4",
                                                                 "--size", "16", "--quiet"])
cli("phantom-out-is-file", USAGE, "image.png", lambda w: ["phantom", "--out", w.image, "--n", "4", "--size", "16",
                                                          "--quiet"])
cli("phantom-grid-in-file", USAGE, "image.png", lambda w: ["phantom", "--grid", os.path.join(w.image, "g.png"),
                                                           "--size", "16"])
for argv, match in ((["--train-steps", "0"], "--train-steps"), (["--resume", "--overwrite"], "--resume"),
                    (["--stop-after", "nothing"], "--stop-after"), (["--seed", "x"], "--seed")):
    cli(f"demo-{'_'.join(argv)}", USAGE, match, lambda w, a=argv: ["demo", "--out", _out(w, "demo"), *a])
cli("unknown-command", USAGE, "nosuch", lambda w: ["nosuch"])
cli("unknown-flag", USAGE, "--frobnicate", lambda w: ["maps", "inspect", w.map, "--frobnicate"])


# 5. loaders (dermdiff.data): the exception type and a message naming the file, row and field
def _load(path, **kwargs):
    from dermdiff.data import load_any

    return lambda: load_any(path, **kwargs)


FOLDER_ERRORS = {
    "boxes_infinity": "line 2.*boxes.*Infinity",
    "boxes_nan": "line 2.*boxes.*NaN",
    "boxes_text": "line 2.*boxes.*not JSON",
    "boxes_outside": "line 2.*box",
    "boxes_huge": "line 2.*boxes",
    "skin_type_7": "line 2.*skin type",
    "skin_type_word": "line 2.*skin type.*dark",
    "label_unknown": "line 2.*eczema",
    "image_missing": "line 2.*nowhere.png",
    "map_missing": "line 2.*nowhere.png",
    "image_truncated": "line 2.*cannot read image",
    "image_text": "line 2.*cannot read image",
    "map_truncated": "line 2.*semantic map",
    "csv_latin1": "metadata.csv.*UTF-8",
    "csv_no_file_name": "metadata.csv.*file_name",
    "info_bad": "dataset_info.json",
}
for name, match in FOLDER_ERRORS.items():
    call(f"load-folder-{name}", ValueError, match, lambda w, n=name: _load(getattr(w.folders, n)))
for name in ("boxes_infinity", "image_truncated", "csv_latin1", "info_bad"):  # the same loader, through the CLI
    match = FOLDER_ERRORS[name]
    cli(f"evaluate-data-{name}", DATA, match.replace("line 2.*", "metadata.csv line 2.*"),
        lambda w, n=name: _evaluate(w, "--pipeline", w.pipe, data=getattr(w.folders, n)))
call("load-missing", FileNotFoundError, "nowhere", lambda w: _load(os.path.join(w.root, "nowhere")))
call("load-unknown-name", (ValueError, FileNotFoundError), "no-such-dataset", lambda w: _load("no-such-dataset"))
call("load-empty-dir", ValueError, "empty-dir", lambda w: _load(w.empty_dir))
call("load-limit-0", ValueError, "limit", lambda w: _load(w.phantom, limit=0))
call("load-limit-minus", ValueError, "limit", lambda w: _load(w.phantom, limit=-3))
call("load-size-0", ValueError, "size", lambda w: _load(w.phantom, size=0))
call("npz-truncated", ValueError, "dermamnist_truncated.npz", lambda w: _load(w.npz_truncated))
call("npz-not-zip", ValueError, "dermamnist_text.npz", lambda w: _load(w.npz_text))
call("npz-folder-truncated", ValueError, "dermamnist.npz", lambda w: _load(w.npz_dir))
call("npz-float-images", ValueError, "dermamnist_float.npz.*(uint8|float)", lambda w: _load(w.npz_float))
call("npz-split", ValueError, "nosuch", lambda w: _load(w.npz, split="nosuch"))


# 6. training scripts, in-process through `run_script` (what their `__main__` runs); each fails before training
def _gan(w, name, *extra, data=None):
    source = ["--train_data_dir", data or w.phantom]
    if name == "train_lesion_edit" and data is None:  # lesion editing needs healthy images too
        source = ["--phantom", "--phantom_num_images", "8", "--phantom_healthy_fraction", "0.5"]
    return [*source, "--resolution", "32" if name == "train_dermgan" else "16", "--max_train_steps", "1",
            "--output_dir", _out(w, name), "--report_to", "none", *extra]


GAN_SCRIPTS = ("train_dermgan", "train_dcgan", "train_lesion_edit")
for name in GAN_SCRIPTS:
    script(name, "no-output-dir", USAGE, "--output_dir", lambda w: ["--phantom"])
    script(name, "two-sources", USAGE, "exactly one", lambda w, n=name: _gan(w, n, "--phantom", data=w.phantom))
    script(name, "resolution-4", USAGE, "--resolution", lambda w, n=name: _gan(w, n, "--resolution", "4"))
    script(name, "heldout-1", USAGE, "--heldout_fraction", lambda w, n=name: _gan(w, n, "--heldout_fraction", "1"))
    script(name, "model-config-missing", USAGE, "--model_config.*nowhere.json",
           lambda w, n=name: _gan(w, n, "--model_config", os.path.join(w.root, "nowhere.json")))
    script(name, "model-config-bad-json", DATA, "bad.json", lambda w, n=name: _gan(w, n, "--model_config", w.bad_json))
    script(name, "model-config-list", DATA, "list.json", lambda w, n=name: _gan(w, n, "--model_config", w.list_json))
    script(name, "data-missing", USAGE, "nowhere",
           lambda w, n=name: _gan(w, n, data=os.path.join(w.root, "nowhere")))
    script(name, "data-truncated-image", DATA, "line 2.*cannot read image",
           lambda w, n=name: _gan(w, n, data=w.folders.image_truncated))
    script(name, "data-csv-latin1", DATA, "metadata.csv.*UTF-8", lambda w, n=name: _gan(w, n, data=w.folders.csv_latin1))
    script(name, "batch-size-0", USAGE, "train_batch_size", lambda w, n=name: _gan(w, n, "--train_batch_size", "0"))
    script(name, "learning-rate-negative", USAGE, "learning_rate",
           lambda w, n=name: _gan(w, n, "--learning_rate", "-1"))
    script(name, "steps-0", USAGE, "max_train_steps", lambda w, n=name: _gan(w, n, "--max_train_steps", "0"))
    script(name, "checkpoints-total-limit-0", USAGE, "--checkpoints_total_limit",
           lambda w, n=name: _gan(w, n, "--checkpoints_total_limit", "0"))
    script(name, "checkpointing-steps-negative", USAGE, "--checkpointing_steps",
           lambda w, n=name: _gan(w, n, "--checkpointing_steps", "-1"))
    script(name, "resume-missing", USAGE, "resume_from_checkpoint.*nowhere",
           lambda w, n=name: _gan(w, n, "--resume_from_checkpoint", os.path.join(w.root, "nowhere")))
    script(name, "seed-text", USAGE, "--seed", lambda w, n=name: _gan(w, n, "--seed", "x"))
script("train_dermgan", "resolution-24", USAGE, "--resolution", lambda w: _gan(w, "train_dermgan", "--resolution", "24"))
script("train_dermgan", "resolution-8", USAGE, "--resolution", lambda w: _gan(w, "train_dermgan", "--resolution", "8"))
script("train_dermgan", "resolution-16", USAGE, "--resolution.*PatchGAN",
       lambda w: _gan(w, "train_dermgan", "--resolution", "16"))
script("train_dermgan", "lambda-negative", USAGE, "--lambda_l1", lambda w: _gan(w, "train_dermgan", "--lambda_l1", "-1"))
script("train_dermgan", "validation-skin-type", USAGE, "--validation_skin_types",
       lambda w: _gan(w, "train_dermgan", "--validation_skin_types", "9"))
script("train_dcgan", "truncation-0", USAGE, "--truncation", lambda w: _gan(w, "train_dcgan", "--truncation", "0"))
script("train_lesion_edit", "resolution-18", USAGE, "--resolution",
       lambda w: _gan(w, "train_lesion_edit", "--resolution", "18"))


def _diffusion(w, *extra, data=None):
    return ["--train_data_dir", data or w.phantom, "--resolution", "16", "--max_train_steps", "1",
            "--output_dir", _out(w, "diffusion"), "--report_to", "none", *extra]


script("train_diffusion", "no-source", USAGE, "exactly one", lambda w: ["--output_dir", _out(w, "d")])
script("train_diffusion", "resolution-4", USAGE, "--resolution", lambda w: _diffusion(w, "--resolution", "4"))
script("train_diffusion", "dropout-2", USAGE, "--condition_dropout", lambda w: _diffusion(w, "--condition_dropout", "2"))
script("train_diffusion", "model-config-bad-json", DATA, "bad.json", lambda w: _diffusion(w, "--model_config", w.bad_json))
script("train_diffusion", "model-config-list", DATA, "list.json", lambda w: _diffusion(w, "--model_config", w.list_json))
script("train_diffusion", "data-missing", USAGE, "nowhere", lambda w: _diffusion(w, data=os.path.join(w.root, "nowhere")))
script("train_diffusion", "data-boxes-nan", DATA, "line 2.*boxes", lambda w: _diffusion(w, data=w.folders.boxes_nan))
script("train_diffusion", "data-truncated-map", DATA, "line 2.*semantic map",
       lambda w: _diffusion(w, data=w.folders.map_truncated))
script("train_diffusion", "batch-size-0", USAGE, "train_batch_size", lambda w: _diffusion(w, "--train_batch_size", "0"))
script("train_diffusion", "learning-rate-0", USAGE, "learning_rate", lambda w: _diffusion(w, "--learning_rate", "0"))
script("train_diffusion", "resume-missing", USAGE, "resume_from_checkpoint.*nowhere",
       lambda w: _diffusion(w, "--resume_from_checkpoint", os.path.join(w.root, "nowhere")))


def _classifier(w, *extra, data=None):
    return ["--train_data_dir", data or w.phantom, "--resolution", "16", "--num_epochs", "1",
            "--output_dir", _out(w, "classifier"), *extra]


script("train_classifier", "no-data", USAGE, "--train_data_dir", lambda w: [])
script("train_classifier", "data-missing", USAGE, "nowhere", lambda w: _classifier(w, data=os.path.join(w.root, "nowhere")))
script("train_classifier", "data-npz-truncated", DATA, "dermamnist_truncated.npz",
       lambda w: _classifier(w, data=w.npz_truncated))
script("train_classifier", "data-npz-float", DATA, "dermamnist_float.npz", lambda w: _classifier(w, data=w.npz_float))
script("train_classifier", "data-label-unknown", DATA, "line 2.*eczema",
       lambda w: _classifier(w, data=w.folders.label_unknown))
script("train_classifier", "validation-missing", USAGE, "nowhere",
       lambda w: _classifier(w, "--validation_data_dir", os.path.join(w.root, "nowhere")))
script("train_classifier", "loader-kwargs-json", USAGE, "--train_loader_kwargs",
       lambda w: _classifier(w, "--train_loader_kwargs", "{x"))
script("train_classifier", "split-fractions-json", USAGE, "--split_fractions",
       lambda w: _classifier(w, "--split_fractions", "[1"))
script("train_classifier", "backbone", USAGE, "--backbone", lambda w: _classifier(w, "--backbone", "nonet"))
script("train_classifier", "pretrained-missing", USAGE, "nowhere.safetensors",
       lambda w: _classifier(w, "--pretrained", os.path.join(w.root, "nowhere.safetensors")))
script("train_classifier", "epochs-0", USAGE, "num_epochs", lambda w: _classifier(w, "--num_epochs", "0"))
script("train_classifier", "batch-size-0", USAGE, "train_batch_size", lambda w: _classifier(w, "--train_batch_size", "0"))
script("train_classifier", "label-smoothing-2", USAGE, "--label_smoothing",
       lambda w: _classifier(w, "--label_smoothing", "2"))
script("train_classifier", "lr-scheduler", USAGE, "--lr_scheduler", lambda w: _classifier(w, "--lr_scheduler", "bogus"))


def _loop(w, *extra, generator=None):
    return ["--generator", generator or w.pipe, "--data_dir", w.phantom, "--output_dir", _out(w, "loop"), *extra]


for name in ("adversarial_loop", "augment_experiment"):
    for damage in ("no_weights", "truncated_weights", "bad_index", "no_scheduler", "missing_tensor"):
        code, match = DAMAGED_PIPELINES[damage]
        script(name, f"generator-{damage}", code, match,
               lambda w, d=damage: _loop(w, generator=getattr(w.pipes, d)))
    script(name, "generator-missing", USAGE, "nowhere", lambda w: _loop(w, generator=os.path.join(w.root, "nowhere")))
    script(name, "no-data", USAGE, "--data_dir", lambda w: ["--generator", w.pipe, "--output_dir", _out(w, "l")])
    script(name, "data-missing", USAGE, "nowhere",
           lambda w: ["--generator", w.pipe, "--data_dir", os.path.join(w.root, "nowhere"), "--output_dir", _out(w, "l")])
    script(name, "loader-kwargs-json", USAGE, "--loader_kwargs", lambda w: _loop(w, "--loader_kwargs", "{x"))
    script(name, "scheduler", USAGE, "--scheduler.*heun|heun", lambda w: _loop(w, "--scheduler", "heun"))
script("adversarial_loop", "strategies", USAGE, "--strategies", lambda w: _loop(w, "--strategies", "magic"))
script("adversarial_loop", "rounds-0", USAGE, "--rounds", lambda w: _loop(w, "--rounds", "0"))


def _autoencoder(w, *extra, data=None):
    return ["--train_data_dir", data or w.phantom, "--resolution", "16", "--max_train_steps", "1",
            "--output_dir", _out(w, "autoencoder"), "--report_to", "none", *extra]


script("train_autoencoder", "no-source", USAGE, "exactly one|--train_data_dir", lambda w: ["--output_dir", _out(w, "a")])
script("train_autoencoder", "data-missing", USAGE, "nowhere",
       lambda w: _autoencoder(w, data=os.path.join(w.root, "nowhere")))
script("train_autoencoder", "data-truncated-image", DATA, "line 2.*cannot read image",
       lambda w: _autoencoder(w, data=w.folders.image_truncated))
script("train_autoencoder", "model-config-bad-json", DATA, "bad.json", lambda w: _autoencoder(w, "--model_config",
                                                                                             w.bad_json))
script("train_autoencoder", "pretrained-vae-missing", USAGE, "nowhere",
       lambda w: _autoencoder(w, "--pretrained_vae", os.path.join(w.root, "nowhere")))
script("train_autoencoder", "batch-size-0", USAGE, "train_batch_size", lambda w: _autoencoder(w, "--train_batch_size", "0"))
