"""Import layering: every module of dermdiff/ and pipelines/ imports only its own layer or the ones below.

The layers, lowest first (ARCHITECTURE.md, "Layers: who may import whom", explains each placement):

| layer        | modules                                                                                |
|--------------|----------------------------------------------------------------------------------------|
| base         | `dermdiff` (the package's lazy names), `errors`, `limits`, `lazy`, `moved`, `hub`,       |
|              | `config_args`, `image_grid`, `html_report`                                             |
| semantic map | `conditions`, `semantic_map`, `latent_maps`, `skin_tone`                                |
| data         | `data.*`                                                                               |
| models       | `models.*`, `classifier`                                                               |
| pipelines    | `pipelines.*` (the top-level `pipelines/` folder, imported as `dermdiff.pipelines`)     |
| metrics/loops| `metrics.*`, `loops.*`, `losses`, `latent_cache`, `hub_sync`, `classifier_card`,        |
|              | `classifier_flags`                                                                     |
| hardcase     | `hardcase.*`                                                                           |
| faces        | `cli`, `commands.*`, `demo`, `demo_report`, `classify`                                 |
| study (apart)| `study.*`: imports only the base layer and is imported only by the faces               |

The semantic map sits BELOW data although data flows into it: the loaders build `SemanticMap`s, so the
map (and the condition registries) are the vocabulary every other layer speaks. Every import counts,
also one inside a function: a lazy import keeps `import dermdiff` fast, it does not make a dependency
go away. Imports are read statically (ast), nothing is imported; the lazy-name tables of package
`__init__` files (`_EXPORTS`, `moved.MOVED`) are strings, not imports, and are not edges.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the source folders and the package names they are imported as
SOURCES = (("dermdiff", "dermdiff"), ("pipelines", "dermdiff.pipelines"))

STUDY = "study"
# (layer, module-name prefixes relative to `dermdiff`), lowest first; "" is the package itself
LAYERS = (
    ("base", ("", "errors", "limits", "lazy", "moved", "hub", "config_args", "image_grid", "html_report")),
    ("semantic map", ("conditions", "semantic_map", "latent_maps", "skin_tone")),
    ("data", ("data",)),
    ("models", ("models", "classifier")),
    ("pipelines", ("pipelines",)),
    (
        "metrics/loops",
        ("metrics", "loops", "losses", "latent_cache", "hub_sync", "classifier_card", "classifier_flags"),
    ),
    ("hardcase", ("hardcase",)),
    ("faces", ("cli", "commands", "demo", "demo_report", "classify")),
    (STUDY, ("study",)),
)
LAYER_NAMES = [name for name, _ in LAYERS]


def find_modules(root: str = ROOT) -> dict[str, str]:
    """Dotted module name -> file, for every .py file of the source folders."""
    modules = {}
    for folder_name, package in SOURCES:
        base = os.path.join(root, folder_name)
        for folder, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for file in sorted(files):
                if not file.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(folder, file[:-3]), base).split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join([package, *parts]) if parts and parts != ["."] else package] = os.path.join(
                    folder, file
                )
    return modules


def imported_names(path: str, module: str) -> set[tuple[str, str | None]]:
    """`(module, name)` for every `from module import name`, `(module, None)` for `import module`; relative
    imports resolved against the file's package."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module
            names.update((source, alias.name) for alias in node.names)
    return names


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    """module -> the modules of the project it imports.

    `from package import submodule` is an edge to the submodule only (the package is the importer's own
    parent or is reached through it); any other name resolves to its longest known module.
    """

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        targets = set()
        for source, name in imported_names(path, module):
            if source.split(".")[0] != "dermdiff":
                continue
            submodule = f"{source}.{name}" if name else None
            targets.add(submodule if submodule in modules else resolve(source))
        graph[module] = {target for target in targets if target and target != module}
    return graph


def layer_of(module: str) -> str | None:
    """The layer of a `dermdiff...` module: its longest matching prefix in `LAYERS`."""
    relative = module[len("dermdiff.") :] if module.startswith("dermdiff.") else ""
    best, best_length = None, -1
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            matches = relative == prefix or (prefix and relative.startswith(prefix + "."))
            if matches and len(prefix) > best_length:
                best, best_length = layer, len(prefix)
    return best


def allowed(importer: str, imported: str) -> bool:
    """May a module of layer `importer` import one of layer `imported`?"""
    if importer == STUDY:
        return imported in ("base", STUDY)
    if imported == STUDY:
        return importer == "faces"
    return LAYER_NAMES.index(imported) <= LAYER_NAMES.index(importer)


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    """Every import that reaches up (or into the study from outside the faces), one line each."""
    found = []
    for module in sorted(graph):
        for target in sorted(graph[module]):
            if not allowed(layer_of(module), layer_of(target)):
                found.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


@pytest.fixture(scope="module")
def graph():
    return import_graph(find_modules())


def test_every_module_has_a_layer(graph):
    unplaced = sorted(module for module in graph if layer_of(module) is None)
    assert not unplaced, f"add these modules to LAYERS in tests/test_layering.py and ARCHITECTURE.md: {unplaced}"
    assert len(graph) > 100  # the walk found the whole tree (pipelines/ included)
    assert "dermdiff.pipelines.pipeline_dermdiff" in graph and "dermdiff.hardcase.loop" in graph


def test_no_import_reaches_up_a_layer(graph):
    found = back_edges(graph)
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, f"{len(found)} import cycle(s): {found}"


def test_the_library_imports_nothing_from_the_faces_outside_it():
    """training/, benchmarks/ and tests/ use the library; the library never reaches back into them."""
    outside = ("training", "benchmarks", "tests")
    found = sorted(
        f"{module} imports {source}"
        for module, path in find_modules().items()
        for source, _ in imported_names(path, module)
        if source.split(".")[0] in outside
    )
    assert not found, found


def test_the_checks_catch_a_back_edge_and_a_cycle():
    """The three checks above are only as good as the graph code: a known bad graph must be flagged."""
    graph = {
        "dermdiff.demo": {"dermdiff.demo_report", "dermdiff.semantic_map"},
        "dermdiff.demo_report": {"dermdiff.demo"},
        "dermdiff.semantic_map": {"dermdiff.data.records"},
        "dermdiff.data.records": {"dermdiff.errors"},
        "dermdiff.study.app": {"dermdiff.hardcase.loop"},
        "dermdiff.errors": set(),
        "dermdiff.hardcase.loop": set(),
    }
    assert cycles(graph) == [["dermdiff.demo", "dermdiff.demo_report"]]
    assert back_edges(graph) == [
        "dermdiff.semantic_map (semantic map) imports dermdiff.data.records (data)",
        "dermdiff.study.app (study) imports dermdiff.hardcase.loop (hardcase)",
    ]
    assert layer_of("dermdiff") == "base" and layer_of("dermdiff.classifier_flags") == "metrics/loops"
    assert layer_of("dermdiff.classifier") == "models" and layer_of("dermdiff.pipelines.sweeps") == "pipelines"


def test_imports_are_resolved_relative_to_their_package(tmp_path):
    (tmp_path / "dermdiff" / "hardcase").mkdir(parents=True)
    (tmp_path / "pipelines").mkdir()
    for name in ("dermdiff/__init__.py", "dermdiff/errors.py", "dermdiff/hardcase/__init__.py", "pipelines/__init__.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "dermdiff" / "hardcase" / "loop.py").write_text(
        "from ..errors import UsageError\nfrom . import report\n\ndef f():\n    from dermdiff.pipelines import x\n"
    )
    (tmp_path / "dermdiff" / "hardcase" / "report.py").write_text("import dermdiff.errors\n")
    (tmp_path / "pipelines" / "sweeps.py").write_text("from ..errors import UsageError\n")
    graph = import_graph(find_modules(str(tmp_path)))
    assert graph["dermdiff.hardcase.loop"] == {"dermdiff.errors", "dermdiff.hardcase.report", "dermdiff.pipelines"}
    assert graph["dermdiff.hardcase.report"] == {"dermdiff.errors"}
    assert graph["dermdiff.pipelines.sweeps"] == {"dermdiff.errors"}
