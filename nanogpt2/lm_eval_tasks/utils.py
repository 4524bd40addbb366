"""Functions of the hellaswag_local lm-evaluation-harness task (loaded by lm_eval from this directory)."""

import datasets

from nanogpt2.hellaswag import harness_query_and_choices, load_hellaswag


def load_hellaswag_jsonl(hellaswag_file=None, **_metadata):
    """The validation split from a local jsonl (`--metadata hellaswag_file=PATH`), every line validated by
    nanogpt2.hellaswag.load_hellaswag; without a file, the official one from nanogpt2's cache. lm_eval passes
    the task's metadata and the model arguments as keywords: the others are not ours."""
    examples = load_hellaswag(hellaswag_file)
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(examples)})


def process_docs(dataset):
    """lm_eval/tasks/hellaswag/utils.py's process_docs, through nanogpt2's copy of its preprocessing (tested
    equal on all 10,042 validation examples in tests/test_hellaswag.py)."""
    def _process_doc(doc):
        query, choices = harness_query_and_choices(doc)
        return {"query": query, "choices": choices, "gold": int(doc["label"])}

    return dataset.map(_process_doc)
