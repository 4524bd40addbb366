"""What docs/architecture.md says of the package's imports, read from the code with `ast` (imports inside
functions included): no cycle; the two model files import only each other's side (they ship with every
checkpoint as remote code); only run_pretrain.py imports the loop."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nanogpt2"


def package_imports() -> dict[str, set[str]]:
    """{module: the package modules it imports}."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {}
    for name in modules:
        imported = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nanogpt2."):
                imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                imported.update(a.name.split(".")[1] for a in node.names if a.name.startswith("nanogpt2."))
        graph[name] = imported & modules
    return graph


def test_package_imports_form_no_cycle():
    graph = package_imports()
    assert len(graph) > 20 and graph["training"] >= {"run_checkpoints", "data", "run_setup"}  # the graph is read
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_model_files_stand_alone_and_only_the_cli_imports_the_loop():
    graph = package_imports()
    assert graph["configuration_nanogpt2"] == set()
    assert graph["modeling_nanogpt2"] == {"configuration_nanogpt2"}
    assert [name for name, imported in graph.items() if "training" in imported] == []
    scripts = PACKAGE.parent.glob("*.py")
    assert [path.name for path in scripts if "nanogpt2.training" in path.read_text()] == ["run_pretrain.py"]
