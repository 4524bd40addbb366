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


def string_literals(tree: ast.AST):
    """(literal text, the node) of every string in code, docstrings left out; an f-string gives each literal
    piece, with the node that follows it (a formatted value, or None)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    in_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for piece, after in zip(node.values, [*node.values[1:], None]):
                if isinstance(piece, ast.Constant):
                    in_fstrings.add(id(piece))
                    yield piece.value, after
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                and id(node) not in in_fstrings):
            yield node.value, None


def spells_a_run_file(text: str, after) -> bool:
    """A path made of a run-directory name: the name alone, `checkpoint-<value>`, a checkpoint glob, a data file."""
    return (text in ("metrics.jsonl", "training_state", "trainer_state.json", "checkpoint-")
            or "checkpoint-*" in text or "data_rank" in text
            or (text.endswith("checkpoint-") and isinstance(after, ast.FormattedValue)))


def test_only_run_dir_spells_run_directory_file_names():
    assert any(spells_a_run_file(text, after)
               for text, after in string_literals(ast.parse((PACKAGE / "run_dir.py").read_text())))  # it detects
    spelled = {path.name: sorted({text for text, after in string_literals(ast.parse(path.read_text()))
                                  if spells_a_run_file(text, after)})
               for path in PACKAGE.glob("*.py") if path.name != "run_dir.py"}
    assert {name: texts for name, texts in spelled.items() if texts} == {}


def test_every_exception_class_derives_from_the_one_base():
    classes = {}
    for path in [*PACKAGE.glob("*.py"), *PACKAGE.parent.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", "").endswith(("Error", "Exception", "Interrupted")) for base in node.bases):
                classes[node.name] = path.name
    assert len(classes) >= 10 and set(classes.values()) == {"errors.py"}, classes  # one vocabulary, one file
    import nanogpt2.errors as errors

    for name in classes:
        assert issubclass(getattr(errors, name), errors.NanoGPT2Error), name


# The hooks and attributes transformers' model contract asks a model to define or read ("How to add a model"):
# public by convention although spelled with an underscore; `_asdict` is namedtuple's public API.
MODEL_CONTRACT = {"_attn_implementation", "_init_weights", "_tied_weights_keys", "_can_compile_fullgraph",
                  "_no_split_modules", "_supports_sdpa", "_supports_flash_attn", "_supports_flex_attn",
                  "_supports_attention_backend", "_skip_keys_device_placement", "_keys_to_ignore_on_load_unexpected",
                  "_checkpoint_conversion_mapping", "_can_record_outputs", "_asdict"}


def test_no_private_name_of_transformers_or_argparse():
    """The package reaches transformers and argparse through their public API only: no private attribute
    (`_name`) that the package does not define itself, no override of a private method of their classes, no
    `transformers._x` module."""
    trees = {path.name: ast.parse(path.read_text()) for path in PACKAGE.glob("*.py")}
    own, found = set(), []
    for tree in trees.values():  # private names the package defines: its own functions, methods and state
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    for part in target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]:
                        if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name):  # self._x = ...
                            own.add(part.attr)
    for file, tree in trees.items():
        foreign = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.module or "").split(".")[0] in ("transformers", "argparse") for alias in node.names}
        foreign |= {"argparse", "transformers"}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "transformers" and any(
                    part.startswith("_") for part in node.module.split(".")):
                found.append(f"{file}:{node.lineno}: from {node.module} import ...")
            if isinstance(node, ast.ClassDef) and any(ast.unparse(base).split(".")[0] in foreign
                                                      for base in node.bases):
                found += [f"{file}:{item.lineno}: {node.name} overrides {item.name}" for item in node.body
                          if isinstance(item, ast.FunctionDef) and item.name.startswith("_")
                          and not item.name.startswith("__") and item.name not in MODEL_CONTRACT]
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in MODEL_CONTRACT
                    and (ast.unparse(node.value).split(".")[0] in foreign
                         or node.attr not in own and ast.unparse(node.value).split(".")[0] in ("self", "parser"))):
                found.append(f"{file}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_ruff_is_clean():
    """`ruff check .` with pyproject.toml's [tool.ruff] (line length 120, import order), in the fast tier."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
                            cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
