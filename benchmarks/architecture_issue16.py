"""Issue 16's closing measurements, before vs after, read from two git revisions (nothing is checked out).

    python benchmarks/architecture_issue16.py --before 1d4e8d9 --after main \
        --out benchmarks/results/architecture_issue16.md

Each revision is unpacked with `git archive` into a temporary folder (deleted afterwards) and measured there:

1. **Files and lines** (`.py` files; lines as `wc -l` counts them) per folder: `dermdiff/` top level, each
   `dermdiff/` subpackage (recursive), `pipelines/`, `training/`, `benchmarks/`, `tests/`.
2. **Import cycles** among the modules of `dermdiff/` and `pipelines/` (as `dermdiff.pipelines`), with the
   static reader of `tests/test_layering.py` from the current checkout (every import counts, also one inside
   a function; lazy-name tables are strings, not imports).
3. **Copy-paste pairs**: the `duplicates` command (when it is on PATH) over each whole unpacked tree, with the
   same settings (`--min-lines 6`, its default).
4. **Generation settings**: for each of `num_inference_steps`, `guidance_scale`, `strength`,
   `adversarial_guidance_scale`, `adversarial_start`, `max_shift`, `batch_size`, `scheduler`, the places in
   `dermdiff/`, `pipelines/`, `training/` and `benchmarks/` (not tests) that *declare* it and that *validate* it,
   counted statically (ast) as follows.
   - declared: a field of a `@dataclass` class; an `add_argument` call whose option (dashes -> underscores),
     `dest=` or `default=` expression names the setting (so `--steps` with `default=DEFAULTS.num_inference_steps`
     counts); a function parameter of that name with a default value.
   - validated: a function (or class body) holding, for the setting, an `if` whose test reads it (a name, an
     attribute, or a string key) and whose body raises or calls `.error(...)`; an `assert` that reads it; a
     call of a `check*` / `validate*` function (or `_check*`, `_validate*`) not defined in the same file that
     passes it; or an `add_argument` of it with `choices=`. Several checks in one function count once.
   `batch_size` and `scheduler` also name other things (a classifier's batch, a pipeline's scheduler object),
   so a site counts for them only when the same class, signature or argparse function declares another of the
   eight settings too, or is a subclass of such a class (`NOT_GENERATION` lists the one exception found by
   reading: `DemoConfig.batch_size`).
   The names the settings had before (`generation_batch_size`, the demo's `inference_steps`) count as the
   setting; the trainers' validation sampling (`validation_inference_steps`, `ddpm_num_inference_steps`, ...)
   is another setting and is not counted. Flags generated at run time from dataclass fields
   (`dermdiff.config_args`) are not declarations: the field is.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("num_inference_steps", "guidance_scale", "strength", "adversarial_guidance_scale", "adversarial_start",
            "max_shift", "batch_size", "scheduler")
GENERIC = {"batch_size", "scheduler"}  # counted only beside another generation setting (module docstring)
# other names the same settings had before issue 16 (AugmentationConfig, DemoConfig)
ALIASES = {"generation_batch_size": "batch_size", "inference_steps": "num_inference_steps"}
# names of a generation site that are not generation settings: (class, name) -> what it is
NOT_GENERATION = {("DemoConfig", "batch_size"): "the demo's diffusion-training batch"}
SCANNED = ("dermdiff", "pipelines", "training", "benchmarks")


# ----------------------------------------------------------------------------------------------------------------
# a revision as a folder
# ----------------------------------------------------------------------------------------------------------------
def unpack(rev: str, folder: str) -> str:
    """Writes the tracked files of `rev` into `folder` (git archive); returns the full commit hash."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return commit


def python_files(root: str, folder: str) -> list[str]:
    found = []
    for where, dirs, files in os.walk(os.path.join(root, folder)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.join(where, name) for name in sorted(files) if name.endswith(".py")]
    return found


# ----------------------------------------------------------------------------------------------------------------
# 1. files and lines
# ----------------------------------------------------------------------------------------------------------------
def count_lines(path: str) -> int:
    with open(path, "rb") as handle:
        return handle.read().count(b"\n")


def folder_sizes(root: str) -> dict[str, tuple[int, int]]:
    """folder label -> (.py files, lines)."""
    sizes = {}

    def add(label: str, paths: list[str]) -> None:
        sizes[label] = (len(paths), sum(count_lines(path) for path in paths))

    package = os.path.join(root, "dermdiff")
    add("dermdiff/ (top level)", [p for p in python_files(root, "dermdiff") if os.path.dirname(p) == package])
    for sub in sorted(os.listdir(package)):
        if os.path.isdir(os.path.join(package, sub)) and python_files(package, sub):
            add(f"dermdiff/{sub}/", python_files(package, sub))
    add("dermdiff/ (all)", python_files(root, "dermdiff"))
    for folder in ("pipelines", "training", "benchmarks", "tests"):
        add(f"{folder}/", python_files(root, folder))
    return sizes


# ----------------------------------------------------------------------------------------------------------------
# 2. import cycles
# ----------------------------------------------------------------------------------------------------------------
def import_cycles(root: str) -> dict:
    """Modules, import edges and cycles of `root`'s dermdiff/ + pipelines/, read by tests/test_layering.py."""
    spec = importlib.util.spec_from_file_location("layering", os.path.join(ROOT, "tests", "test_layering.py"))
    layering = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layering)
    graph = layering.import_graph(layering.find_modules(root))
    return {"modules": len(graph), "edges": sum(len(targets) for targets in graph.values()),
            "cycles": layering.cycles(graph)}


# ----------------------------------------------------------------------------------------------------------------
# 3. copy-paste pairs
# ----------------------------------------------------------------------------------------------------------------
def duplicate_pairs(root: str) -> dict[str, str] | None:
    """The first line of `duplicates --repo ...` (its pair count) for the whole tree and for dermdiff/ alone, or
    None without the command."""
    if shutil.which("duplicates") is None:
        return None
    found = {}
    for label, folder in (("whole tree", root), ("dermdiff/ alone", os.path.join(root, "dermdiff"))):
        output = subprocess.run(["duplicates", "--repo", folder, "--seconds", "300"], capture_output=True,
                                text=True).stdout
        found[label] = output.strip().splitlines()[0] if output.strip() else "(no output)"
    return found


# ----------------------------------------------------------------------------------------------------------------
# 4. generation settings: declarations and validations
# ----------------------------------------------------------------------------------------------------------------
def _flag_name(text: str) -> str:
    name = text.lstrip("-").replace("-", "_")
    return ALIASES.get(name, name)


def _setting(name: str) -> str | None:
    """The generation setting a Python name stands for (itself or an old alias), else None."""
    name = ALIASES.get(name, name)
    return name if name in SETTINGS else None


def _reads(node: ast.AST) -> set[str]:
    """The settings an expression reads: names, attributes and string constants (keys, flag names)."""
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and _setting(child.id):
            found.add(_setting(child.id))
        elif isinstance(child, ast.Attribute) and _setting(child.attr):
            found.add(_setting(child.attr))
        elif isinstance(child, ast.Constant) and isinstance(child.value, str) and _flag_name(child.value) in SETTINGS:
            found.add(_flag_name(child.value))
    return found


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _flag_settings(call: ast.Call) -> set[str]:
    """The settings an `add_argument(...)` call declares (option name, dest= or default=)."""
    found = {_flag_name(arg.value) for arg in call.args if isinstance(arg, ast.Constant)
             and isinstance(arg.value, str)} & set(SETTINGS)
    for keyword in call.keywords:
        if keyword.arg == "dest" and isinstance(keyword.value, ast.Constant) and _setting(str(keyword.value.value)):
            found.add(_setting(keyword.value.value))
        if keyword.arg == "default":
            found |= {name for name in _reads(keyword.value) if not isinstance(keyword.value, ast.Constant)}
    return found


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any("dataclass" in ast.unparse(decorator) for decorator in node.decorator_list)


class SettingSites(ast.NodeVisitor):
    """Collects (kind, setting, site id, line) for declarations and validations in one file."""

    def __init__(self, path: str, tree: ast.AST):
        self.path = path
        # a check of this file (`check_inputs`) is counted by its own body, not again at each call
        self.defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef,
                                                                                  ast.AsyncFunctionDef))}
        self.declared: list[tuple[str, str, str, int]] = []  # kind, setting, site, line
        self.bases: dict[str, set[str]] = {}  # class site -> names of its base classes
        self.validated: list[tuple[str, str, str, int]] = []
        self.scope = ["<module>"]

    def _site(self) -> str:
        return f"{self.path}::{'.'.join(self.scope)}"

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.bases[self._site()] = {ast.unparse(base).rpartition(".")[2] for base in node.bases}
        if _is_dataclass(node):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) \
                        and _setting(item.target.id) and (node.name, item.target.id) not in NOT_GENERATION:
                    self.declared.append(("dataclass field", _setting(item.target.id), self._site(), item.lineno))
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node) -> None:
        arguments = node.args
        positional = arguments.posonlyargs + arguments.args
        with_defaults = positional[len(positional) - len(arguments.defaults):] + [
            arg for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults) if default is not None
        ]
        self.scope.append(node.name)
        for arg in with_defaults:
            if _setting(arg.arg):
                self.declared.append(("keyword default", _setting(arg.arg), self._site(), node.lineno))
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        name = _call_name(node)
        if name == "add_argument":
            for setting in sorted(_flag_settings(node)):
                self.declared.append(("argparse flag", setting, self._site(), node.lineno))
                if any(keyword.arg == "choices" for keyword in node.keywords):
                    self.validated.append(("flag choices", setting, self._site(), node.lineno))
        elif re.match(r"_?(check|validate)", name) and name not in self.defined:
            for setting in sorted(_reads(ast.Tuple(elts=list(node.args) + [k.value for k in node.keywords]))):
                self.validated.append((f"{name}()", setting, self._site(), node.lineno))
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        body = ast.Module(body=node.body, type_ignores=[])
        fails = any(isinstance(child, ast.Raise) or (isinstance(child, ast.Call) and _call_name(child) == "error")
                    for child in ast.walk(body))
        if fails:
            for setting in sorted(_reads(node.test)):
                self.validated.append(("if ...: raise", setting, self._site(), node.lineno))
        self.generic_visit(node)

    def visit_Assert(self, node: ast.Assert) -> None:
        for setting in sorted(_reads(node.test)):
            self.validated.append(("assert", setting, self._site(), node.lineno))
        self.generic_visit(node)


def setting_sites(root: str) -> dict:
    """setting -> {"declared": [...], "validated": [...]} with (kind, file:line) entries, after the GENERIC rule."""
    declared, validated, bases = [], [], {}
    for folder in SCANNED:
        for path in python_files(root, folder):
            relative = os.path.relpath(path, root)
            tree = ast.parse(open(path, encoding="utf-8").read(), filename=relative)
            visitor = SettingSites(relative, tree)
            visitor.visit(tree)
            declared += visitor.declared
            validated += visitor.validated
            bases.update(visitor.bases)
    # a site (class, signature, argparse function) that declares two or more of the eight is a generation site;
    # a validation belongs to the site it sits in (a dataclass's __post_init__, the parse_args that adds the flags)
    per_site = defaultdict(set)
    for _, setting, site, _ in declared:
        per_site[site].add(setting)
    generation_sites = [site for site, names in per_site.items() if len(names) >= 2]
    # a subclass of a generation-settings class (one that re-declares a field) is a generation site too
    generation_classes = {site.rpartition(".")[2] for site in generation_sites if site in bases}
    generation_sites += [site for site, names in bases.items() if names & generation_classes]

    def keep(setting: str, site: str) -> bool:
        return setting not in GENERIC or any(site == g or site.startswith(g + ".") for g in generation_sites)

    result = {setting: {"declared": [], "validated": []} for setting in SETTINGS}
    for kind, setting, site, line in declared:
        if keep(setting, site):
            result[setting]["declared"].append((kind, f"{site.split('::')[0]}:{line}"))
    seen = set()  # a validating place is a function (or class body): several checks in one count once
    for kind, setting, site, line in validated:
        if keep(setting, site) and (setting, site) not in seen:
            seen.add((setting, site))
            result[setting]["validated"].append((kind, f"{site.split('::')[0]}:{line}"))
    return result


# ----------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------
def measure(rev: str) -> dict:
    folder = tempfile.mkdtemp(prefix="dermdiff-issue16-")
    try:
        commit = unpack(rev, folder)
        return {"rev": rev, "commit": commit, "sizes": folder_sizes(folder), "imports": import_cycles(folder),
                "duplicates": duplicate_pairs(folder), "settings": setting_sites(folder)}
    finally:
        shutil.rmtree(folder)


def _scopes(entries) -> str:
    """`N (library a, training b, benchmarks c)`: library = dermdiff/ + pipelines/."""
    counts = Counter({"dermdiff": "library", "pipelines": "library"}.get(where.split("/")[0], where.split("/")[0])
                     for _, where in entries)
    return f"{len(entries)} ({counts['library']} / {counts['training']} / {counts['benchmarks']})"


def report(before: dict, after: dict) -> str:
    b, a = before["commit"][:7], after["commit"][:7]
    lines = [f"# Issue 16, before ({b}) vs after ({a})", "",
             "Made by `python benchmarks/architecture_issue16.py --before "
             f"{before['rev']} --after {after['rev']}`; what each number counts is in the script's docstring.", "",
             "## Files and lines per folder (.py)", "", f"| folder | before {b} | after {a} |", "|---|---|---|"]
    for label in sorted(set(before["sizes"]) | set(after["sizes"]), key=_folder_order):
        cells = [f"{before['sizes'][label][0]} files, {before['sizes'][label][1]:,} lines" if label in before["sizes"]
                 else "-",
                 f"{after['sizes'][label][0]} files, {after['sizes'][label][1]:,} lines" if label in after["sizes"]
                 else "-"]
        lines.append(f"| `{label}` | {cells[0]} | {cells[1]} |")
    lines += ["", "## Import cycles (dermdiff/ + pipelines/, every import, read by tests/test_layering.py)", "",
              "| | before | after |", "|---|---|---|"]
    for key in ("modules", "edges"):
        lines.append(f"| {key} | {before['imports'][key]} | {after['imports'][key]} |")
    lines.append(f"| cycles | {len(before['imports']['cycles'])} {_cycle_text(before)} | "
                 f"{len(after['imports']['cycles'])} {_cycle_text(after)} |")
    lines += ["", "## Copy-paste pairs (`duplicates --repo FOLDER`, default --min-lines 6)", ""]
    if before["duplicates"] is None or after["duplicates"] is None:
        lines.append("- not measured: the `duplicates` command is not on PATH")
    else:
        for label in before["duplicates"]:
            lines += [f"- {label}, before: {before['duplicates'][label]}",
                      f"- {label}, after: {after['duplicates'][label]}"]
    lines += ["",
              "## Generation settings: places that declare / validate each (dermdiff/, pipelines/, training/, "
              "benchmarks/)", "",
              "Each cell: all places (library = dermdiff/ + pipelines/ / training/ / benchmarks/).", "",
              "| setting | declared before | declared after | validated before | validated after |",
              "|---|---|---|---|---|"]
    for setting in SETTINGS:
        old, new = before["settings"][setting], after["settings"][setting]
        lines.append(f"| `{setting}` | {_scopes(old['declared'])} | {_scopes(new['declared'])} | "
                     f"{_scopes(old['validated'])} | {_scopes(new['validated'])} |")
    for title, data in (("before", before), ("after", after)):
        lines += ["", f"### The places, {title} ({data['commit'][:7]})", ""]
        for setting in SETTINGS:
            entries = data["settings"][setting]
            lines.append(f"- `{setting}` declared: " + ("; ".join(f"{where} ({kind})" for kind, where
                                                                    in entries["declared"]) or "-"))
            lines.append("  validated: " + ("; ".join(f"{where} ({kind})" for kind, where
                                                      in entries["validated"]) or "-"))
    return "\n".join(lines) + "\n"


def _cycle_text(data: dict) -> str:
    cycles = data["imports"]["cycles"]
    return "(" + "; ".join(" <-> ".join(cycle) for cycle in cycles) + ")" if cycles else ""


def _folder_order(label: str) -> tuple:
    order = ["dermdiff/ (all)", "dermdiff/ (top level)"]
    if label in order:
        return (0, order.index(label))
    return (1 if label.startswith("dermdiff/") else 2, label)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="1d4e8d9", help="Revision before issue 16's work.")
    parser.add_argument("--after", default="HEAD", help="Revision after it.")
    parser.add_argument("--out", default=None, help="Markdown file to write (default: print).")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    text = report(measure(args.before), measure(args.after))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
