"""The curriculum notebooks: stored without outputs, in the curriculum's order, and (slow tier) executed top to
bottom with nbclient, offline, against ../shared/data, as a student would run them."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# the curriculum's order (issue 27): each pattern must match a markdown cell after the previous one's
ORDER = {
    "build_GPT.ipynb": ["Tiny Shakespeare", "vocabulary", "Batches", "bigram model", "Training the bigram",
                        "averaging|mathematical trick", "one head", "many heads", "feed-forward", "residual",
                        "LayerNorm", "dropout", "Training a character-level GPT", "GPT-2 scale"],
    "Tokenization.ipynb": ["code points", "UTF-8", "from scratch", "merge table", "Decoding", "round trip|Encoding",
                           "regex pre-split", "tiktoken", "Special tokens", "train_tokenizer.py", "bytes per token",
                           "Digits", "Leading spaces", "Non-English"],
}
# what a correct run prints somewhere in its outputs
EXPECTED_OUTPUTS = {
    "build_GPT.ipynb": ["vocabulary: 65", "same outputs: NanoGPT2Block", "step 400: train", "converted ",
                        "Hello, I'm a language model,"],
    "Tokenization.ipynb": ["identical to tiktoken: True", "encoder.json == tiktoken's ranks for all 50256",
                           "round trip: decode(encode(text)) == text", "**bytes per token** (higher is better",
                           "0 of 100 learned tokens cross a boundary"],
}


def read(name):
    import nbformat

    return nbformat.read(NOTEBOOKS / name, as_version=4)


@pytest.mark.parametrize("name", sorted(ORDER))
def test_stored_without_outputs_as_valid_nbformat(name):
    import nbformat

    notebook = read(name)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) > 10
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec.name == "python3"
    assert json.loads((NOTEBOOKS / name).read_text())["nbformat"] == 4


@pytest.mark.parametrize("name", sorted(ORDER))
def test_cells_follow_the_curriculum_order(name):
    markdown = [cell.source for cell in read(name).cells if cell.cell_type == "markdown"]
    position = 0
    for pattern in ORDER[name]:
        found = next((i for i in range(position, len(markdown)) if re.search(pattern, markdown[i], re.I)), None)
        assert found is not None, f"{name}: no markdown cell after cell {position} mentions {pattern!r}"
        position = found


def outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(value) for key, value in output.get("data", {}).items() if key.startswith("text/"))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ORDER))
def test_notebook_runs_top_to_bottom_offline(name, shared_data, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("NANOGPT2_SHARED_DATA", str(shared_data))  # the kernel inherits this environment
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    notebook = read(name)
    # a cell that fails raises CellExecutionError naming it; the per-cell timeout only stops a hang
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.output_type == "error"]
    assert errors == []
    text = outputs_text(notebook)
    for expected in EXPECTED_OUTPUTS[name]:
        assert expected in text, expected
    plots = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    assert plots >= 1  # at least the loss curve / the compression plot
