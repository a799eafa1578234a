"""The package's layering (README, Layout): every module imports only from its own layer or the
layers below, lazy imports inside functions included, and nothing imports in a circle. A new
module gets a layer here, or this test names it."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "src" / "nano8k"

# top to bottom; a package (data, decoding) is one unit. The README's Layout states the same order.
LAYERS = [
    ["__main__", "cli"],
    ["pipeline"],
    ["train", "decode", "export", "sweep", "config_alignment"],
    ["calls", "vad"],
    ["trainer", "preflight"],
    ["decoding", "rundir", "launch"],
    ["model", "deepspeed_support", "compare", "score", "simulate", "augment", "tiny", "random_model", "run_log"],
    ["telephone_line"],
    ["funasr_gaps"],
    ["checkpoints"],
    ["config"],
    ["data", "channel"],
    ["files", "parallel", "devices", "interrupts", "errors", "conf", "__init__"],
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(dotted: str) -> str:
    """nano8k.decoding.joint -> decoding; nano8k.__version__ (the package's own __init__) -> __init__."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1] if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file() else "__init__"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module's nano8k imports (module-level and inside functions), as full module names."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "nano8k"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] == "nano8k":
                    targets |= {f"{base}.{a.name}" if (PACKAGE.parent / f"{base}.{a.name}".replace(".", "/")).exists()
                                or (PACKAGE.parent / (f"{base}.{a.name}".replace(".", "/") + ".py")).is_file() else base
                                for a in node.names}
        found[name] = targets
    return found


def test_every_unit_has_a_layer():
    units = {unit_of(name) for name in imports()}
    assert units - set(LEVEL) == set(), "give these modules a layer in LAYERS (and README's Layout)"


def test_no_module_imports_upward():
    upward = sorted(f"{name} -> {target}" for name, targets in imports().items() for target in targets
                    if LEVEL[unit_of(target)] < LEVEL[unit_of(name)])
    assert upward == []


def test_no_import_cycle():
    graph = imports()
    units: dict[str, set[str]] = {}
    for name, targets in graph.items():  # between units (a package is one), and between modules
        units.setdefault(unit_of(name), set()).update(unit_of(t) for t in targets if unit_of(t) != unit_of(name))
    for edges in (units, graph):
        cycle = find_cycle(edges)
        assert cycle is None, " -> ".join(cycle or [])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_checks_catch_what_they_are_for():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
    assert LEVEL[unit_of("nano8k.decoding.joint")] < LEVEL[unit_of("nano8k.config")]  # config lies below decoding
