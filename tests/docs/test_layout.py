"""The gateway's house as docs/ARCHITECTURE.md draws it: no import circles, transports apart."""
from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
TRANSPORTS = ("gateway.ws", "gateway.sse")
STAGES = ("gateway.edge", "gateway.streams", "gateway.delivery", "gateway.chat")


def module_name(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every gateway module and the gateway modules it imports, TYPE_CHECKING and function-level imports included."""
    found: dict[str, set[str]] = {}
    for path in GATEWAY.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway"):
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names if alias.name.startswith("gateway"))
        found[module_name(path)] = names
    return {module: {n for n in names if n in found and n != module} for module, names in found.items()}


def test_no_import_circle_in_the_gateway() -> None:
    graph = imports()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            assert state.get(target) != 1, "import circle: " + " -> ".join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_transports_never_import_each_other_and_no_stage_imports_a_transport() -> None:
    for module, targets in imports().items():
        mine = next((t for t in TRANSPORTS if module.startswith(t)), None)
        for target in targets:
            other = next((t for t in TRANSPORTS if target.startswith(t)), None)
            if other is not None and other != mine:
                assert mine is None and not module.startswith(STAGES), f"{module} imports {target}"
                assert module in ("gateway.app",), f"only the app wires transports: {module} imports {target}"


def test_the_folders_docs_name_exist() -> None:
    for folder in ("edge", "streams", "delivery", "chat", "ws", "sse"):
        assert (GATEWAY / folder / "__init__.py").exists()
    text = (GATEWAY.parent / "docs" / "ARCHITECTURE.md").read_text()
    for path in GATEWAY.rglob("*.py"):
        if path.name != "__init__.py":
            assert path.name in text, f"docs/ARCHITECTURE.md does not place {path.relative_to(GATEWAY)}"
