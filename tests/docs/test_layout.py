"""The house as docs/ARCHITECTURE.md draws it: no import circle anywhere, layers kept, every module placed."""
from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "kb", "shared", "tools", "harness", "examples", "tests")
SERVICES = ("gateway", "kb")
TRANSPORTS = ("gateway.ws", "gateway.sse")
STAGES = ("gateway.edge", "gateway.streams", "gateway.delivery", "gateway.chat")
# What each package may import of ours (docs/ARCHITECTURE.md's table).
MAY_IMPORT = {"shared": {"shared"}, "gateway": {"gateway", "shared"}, "kb": {"kb", "shared"},
              "examples": {"examples", "kb", "shared"},  # a game: the registry (shared) and the world's helpers (kb)
              "tools": {"tools", "gateway", "kb", "shared", "examples"},
              "harness": {"harness", "gateway", "kb", "shared", "tools", "examples"}, "tests": set(PACKAGES)}
TEST_HELPERS = {"tests", "tests.helpers", "tests.conftest"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for top in PACKAGES for p in (ROOT / top).rglob("*.py")}


@cache
def imports() -> dict[str, frozenset[str]]:
    """Every module of ours and the modules of ours it imports: TYPE_CHECKING and function-level imports included."""
    known = modules()
    found: dict[str, frozenset[str]] = {}
    for module, path in known.items():
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        # A package's own __init__ is no dependency of its modules (it runs first whoever imports them).
        found[module] = frozenset(n for n in names if n in known and n != module and not module.startswith(n + "."))
    return found


def circle() -> list[str] | None:
    """The first import circle found, as a path of modules, or None."""
    graph, state = imports(), {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path + [target]
            if target not in state and (found := visit(target, path + [target])):
                return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_no_import_circle_anywhere_in_the_repositorys_python() -> None:
    found = circle()
    assert found is None, "import circle: " + " -> ".join(found or [])


def test_the_circle_check_finds_a_circle_hidden_in_a_function(monkeypatch) -> None:
    graph = dict(imports())
    graph["harness.bench.kit"] = graph["harness.bench.kit"] | {"harness.bench.run"}  # bench.run imports kit
    monkeypatch.setattr("tests.docs.test_layout.imports", lambda: graph)
    assert circle() is not None


def test_each_package_imports_only_what_its_layer_may() -> None:
    for module, targets in imports().items():
        top = module.split(".")[0]
        for target in targets:
            assert target.split(".")[0] in MAY_IMPORT[top], f"{module} imports {target}"


def test_no_test_module_imports_another() -> None:
    for module, targets in imports().items():
        if module.startswith("tests."):
            others = {t for t in targets if t.startswith("tests") and t not in TEST_HELPERS}
            assert not others, f"{module} imports the test module(s) {sorted(others)}: move what they share to " \
                               "tests/helpers.py (functions) or a conftest.py (fixtures)"


def test_transports_never_import_each_other_and_no_stage_imports_a_transport() -> None:
    for module, targets in imports().items():
        if not module.startswith("gateway"):
            continue
        mine = next((t for t in TRANSPORTS if module.startswith(t)), None)
        for target in targets:
            other = next((t for t in TRANSPORTS if target.startswith(t)), None)
            if other is not None and other != mine:
                assert mine is None and not module.startswith(STAGES), f"{module} imports {target}"
                assert module in ("gateway.app",), f"only the app wires transports: {module} imports {target}"


def services_reaching(shared_module: str) -> set[str]:
    """The services that import a shared module, directly or through other shared modules."""
    graph = imports()
    users, reached, todo = set(), {shared_module}, [shared_module]
    while todo:
        target = todo.pop()
        for module, targets in graph.items():
            if target in targets:
                if module.split(".")[0] in SERVICES:
                    users.add(module.split(".")[0])
                elif module.startswith("shared") and module not in reached:
                    reached.add(module)
                    todo.append(module)
    return users


def test_shared_holds_only_what_both_services_use() -> None:
    for module in modules():
        if module.startswith("shared.") and not module.endswith("__init__"):
            if (ROOT / module.replace(".", "/")).is_dir():
                continue
            assert services_reaching(module) == set(SERVICES), \
                f"{module} is used by {sorted(services_reaching(module)) or 'no service'}: it belongs to that service"


def test_harness_has_a_short_top_and_folders_by_purpose() -> None:
    top = [p.name for p in (ROOT / "harness").glob("*.py")]
    assert len(top) <= 12, f"harness/ has {len(top)} modules at its top: {sorted(top)}"
    for folder in ("client", "system", "checks", "chaos", "soak", "bench", "bench/floors"):
        assert (ROOT / "harness" / folder / "__init__.py").exists(), folder


def test_tests_mirror_the_tree() -> None:
    for folder in ("gateway", "kb", "shared", "harness"):
        assert (ROOT / "tests" / folder / "__init__.py").exists(), f"tests/{folder}/"
        assert list((ROOT / "tests" / folder).glob("test_*.py")), f"tests/{folder}/ has no tests"
    assert not list((ROOT / "tests").glob("test_*.py")), "a test module at tests/'s top: put it in its folder"


def placed_paths(text: str) -> set[str]:
    """Every path the page's tree blocks place: `folder/` lines nest what is indented under them."""
    placed: set[str] = set()
    for block in re.findall(r"```\n(.*?)```", text, re.DOTALL):
        stack: list[str] = []
        for line in block.splitlines():
            if not line.strip():
                continue
            depth = (len(line) - len(line.lstrip(" "))) // 2
            name = line.split()[0]
            del stack[depth:]
            if name.endswith("/"):
                stack.append(name.rstrip("/"))
            else:
                placed.add("/".join([*stack, name]))
    return placed


def test_every_module_is_placed_in_the_architecture_page() -> None:
    placed = placed_paths((ROOT / "docs" / "ARCHITECTURE.md").read_text())
    for top in ("gateway", "kb", "shared", "tools", "harness", "examples"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.name != "__init__.py":
                where = str(path.relative_to(ROOT))
                assert where in placed, f"docs/ARCHITECTURE.md does not place {where} in its tree"


def test_the_page_places_nothing_that_does_not_exist() -> None:
    placed = placed_paths((ROOT / "docs" / "ARCHITECTURE.md").read_text())
    stale = sorted(p for p in placed if p.endswith(".py") and not (ROOT / p).exists())
    assert not stale, f"docs/ARCHITECTURE.md places files that are gone: {stale}"
