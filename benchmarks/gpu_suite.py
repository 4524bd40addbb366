"""Everything a GPU can tell about nanogpt2, in one command (run it through benchmarks/gpu_suite.sh).

    bash benchmarks/gpu_suite.sh OUT_DIR tests,step          # ~6-8 min on one H200
    bash benchmarks/gpu_suite.sh OUT_DIR loop,hellaswag,char  # ~5-7 min

Phases, in this order:
  tests      tests/test_cuda.py (bf16 + compile + fused AdamW vs fp32, SDPA kernel, resume, HellaSwag GPU = CPU)
  step       benchmarks/train_throughput.py: nanogpt2 eager and compiled, HF GPT2LMHeadModel compiled and
             build-nanogpt compiled (when third_party/build-nanogpt/train_gpt2.py is present), B=16/32/64
  loop       run_pretrain.py's own optimizer step (PretrainingLoop.train_step, compiled) beside HF GPT-2 compiled
  hellaswag  benchmarks/hellaswag_throughput.py: batched scoring vs one example at a time
  char       examples/gpt_char.py --config gpu (nanoGPT's Shakespeare-char settings)
  modern     only when named: the loop phase on the gpt2-124m-modern recipe (Muon + AdamW, rotary, RMSNorm,
             QK-norm, ReLU², untied head, softcap), compiled, at the first batch size; MFU counts its real
             parameters (untied head, no position table)

Each throughput measurement runs in its own process (an out-of-memory batch size costs one row, and
torch.compile never turns a second batch size into a dynamic-shape graph). OUT_DIR/results.json is
rewritten after every measurement, so a command cut off at its time limit still leaves data; rows of
the phases (and batch sizes) run again replace the old ones, the others are kept, so several commands
fill one file. GPU_SUITE_BATCHES=16,32 limits the step and loop phases to those batch sizes;
GPU_SUITE_BUDGET (seconds, default 540) skips a measurement that would end after it (judged by the
phase's previous one); GPU_SUITE_MIRROR=DIR also writes the two files there after every measurement.
Without CUDA the same phases run on the tiny preset, eager, with small sizes, and write the same keys.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PHASES = ("tests", "step", "loop", "hellaswag", "char", "modern")
DEFAULT_PHASES = PHASES[:-1]  # modern (the loop on the modern recipe: Muon, rotary, ...) when named
BUILD_NANOGPT = REPO / "third_party" / "build-nanogpt" / "train_gpt2.py"

# Sizes per mode. CPU mode keeps every phase to seconds (CI runs it).
SETTINGS = {
    # batches: the most telling first, should the budget run out
    "cuda": dict(preset="gpt2-124m", modern_preset="gpt2-124m-modern", batches=[64, 32, 16], seq_len=1024,
                 dtype="bfloat16",
                 step_contenders=["nanogpt2:eager", "nanogpt2:compiled", "hf-gpt2:compiled", "build-nanogpt:compiled"],
                 loop_contenders=["loop:compiled", "hf-gpt2:compiled"], timing=["--warmup_steps", "3", "--rounds",
                                                                                "3", "--steps_per_round", "3"],
                 hellaswag=["--preset", "gpt2-124m", "--limit", "1000"], char=["--config", "gpu"]),
    "cpu": dict(preset="tiny", modern_preset="tiny-modern", batches=[2], seq_len=32,
                dtype="float32",  # eager: compiling costs CI minutes
                step_contenders=["nanogpt2:eager", "hf-gpt2:eager", "build-nanogpt:eager"],
                loop_contenders=["loop:eager", "hf-gpt2:eager"], timing=["--warmup_steps", "1", "--rounds", "2",
                                                                         "--steps_per_round", "1"],
                hellaswag=["--preset", "tiny", "--limit", "4"],
                char=["--config", "cpu", "--max_iters", "4", "--eval_interval", "2", "--eval_iters", "1",
                      "--batch_size", "2", "--block_size", "32", "--n_layer", "1", "--n_head", "2", "--n_embd", "32"]),
}


def shared_data() -> Path:
    return Path(os.environ.get("NANOGPT2_SHARED_DATA", REPO.parent / "shared" / "data"))


def environment() -> dict:
    import accelerate
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "mode": "cuda" if cuda else "cpu",
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(), "build_nanogpt": BUILD_NANOGPT.is_file(),
    }


class Results:
    """OUT_DIR/results.json (and results.md), rewritten after every measurement."""

    def __init__(self, out_dir: Path, phases: list[str], batches: list[int]):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "results.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        rerun = set(phases)
        self.data = {
            **environment(),
            "phases_run": sorted(set(old.get("phases_run", [])) | rerun, key=PHASES.index),
            "tests": old.get("tests") if "tests" not in rerun else None,
            "train_step": [r for r in old.get("train_step", [])
                           if r["phase"] not in rerun or r["batch"] not in batches],
            "hellaswag": old.get("hellaswag", []) if "hellaswag" not in rerun else [],
            "char": old.get("char") if "char" not in rerun else None,
            "errors": [e for e in old.get("errors", []) if e["phase"] not in rerun],
        }

    def save(self) -> None:
        mirror = os.environ.get("GPU_SUITE_MIRROR")  # e.g. the device tool's $OUT: it always has the latest
        for directory in [self.out_dir] + ([Path(mirror)] if mirror else []):
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / ".results.json.tmp"
            tmp.write_text(json.dumps(self.data, indent=2))
            os.replace(tmp, directory / "results.json")
            (directory / "results.md").write_text(markdown(self.data))

    def error(self, phase: str, what: str, message: str) -> None:
        self.data["errors"].append({"phase": phase, "what": what, "message": message[-2000:]})
        print(f"[{phase}] {what} failed: {message[-500:]}", flush=True)
        self.save()


def run_tests(results: Results, mode: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        # one process on the one GPU: without pyproject's `-n auto` (pytest-xdist is not on the GPU image)
        process = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
                                  "tests/test_cuda.py", f"--junitxml={report}"], cwd=REPO, capture_output=True,
                                 text=True, timeout=540)
        print(process.stdout[-3000:], flush=True)
        if not report.is_file():
            results.error("tests", "pytest", process.stdout[-1000:] + process.stderr[-1000:])
            return
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
        failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                  if case.find("failure") is not None or case.find("error") is not None]
    results.data["tests"] = {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
                             "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"],
                             "failed_tests": failed}
    results.save()


def run_throughput(results: Results, phase: str, settings: dict, contenders: list[str], batch: int) -> None:
    available = [c for c in contenders if not c.startswith("build-nanogpt") or BUILD_NANOGPT.is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        command = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--device",
                   "cuda" if torch.cuda.is_available() else "cpu", "--preset", settings["preset"], "--batch_size",
                   str(batch), "--seq_len", str(settings["seq_len"]), "--dtype", settings["dtype"], "--contenders",
                   *available, *settings["timing"], "--output_file", str(out)]
        if BUILD_NANOGPT.is_file():
            command += ["--build_nanogpt", str(BUILD_NANOGPT)]
        if not torch.cuda.is_available():
            command += ["--peak_tflops", "1"]  # an MFU figure against a nominal 1 TFLOP/s, so the keys are the same
        if torch.cuda.is_available():
            process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
            print(process.stdout, flush=True)
            if process.returncode != 0 or not out.is_file():
                results.error(phase, f"B={batch}", process.stderr)
                return
        else:  # nothing is compiled: in this process, which saves CI a start-up per measurement
            load_script("benchmarks/train_throughput.py").main(command[2:])
        rows = json.loads(out.read_text())["results"]
    for row in rows:
        results.data["train_step"].append({"phase": phase, **row})
    results.save()


def load_script(relative: str):
    """A benchmark or example script as a module (they are files, not a package)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up
    sys.path.insert(0, str(path.parent))
    spec.loader.exec_module(module)
    return module


def run_hellaswag(results: Results, settings: dict) -> None:
    module = load_script("benchmarks/hellaswag_throughput.py")
    data_file = shared_data() / "hellaswag" / "hellaswag_val.jsonl"
    argv = settings["hellaswag"] + (["--data_file", str(data_file)] if data_file.is_file() else [])
    argv += ["--device", "cuda" if torch.cuda.is_available() else "cpu"]
    measured = module.main(argv)
    reference = next(v["examples_per_sec"] for name, v in measured.items() if "one example" in name)
    results.data["hellaswag"] = [{"contender": name, **values, "ratio_vs_one_at_a_time": values["examples_per_sec"] /
                                  reference} for name, values in measured.items()]
    results.save()


def run_char(results: Results, settings: dict) -> None:
    module = load_script("examples/gpt_char.py")
    data_file = shared_data() / "tinyshakespeare" / "input.txt"
    with tempfile.TemporaryDirectory() as tmp:
        argv = settings["char"] + ["--output_dir", str(Path(tmp) / "gpt-char")]
        argv += ["--data_file", str(data_file)] if data_file.is_file() else []
        argv += ["--device", "cuda" if torch.cuda.is_available() else "cpu"]
        start = time.perf_counter()
        history, _ = module.main(argv)
        seconds = time.perf_counter() - start
    args = module.parse_args(argv)
    steps = history[-1][0]
    results.data["char"] = {"config": args.config, "steps": steps, "seconds": seconds,
                            "train_loss": history[-1][1]["train"], "val_loss": history[-1][1]["val"],
                            "settings": args.settings}
    results.save()


def markdown(data: dict) -> str:
    lines = [f"# nanogpt2 GPU suite: {data['device']} ({data['mode']} mode)", "",
             f"torch {data['torch']}, transformers {data['transformers']}, accelerate {data['accelerate']}, "
             f"CUDA {data['cuda']}, cuDNN {data['cudnn']}, Python {data['python']}; phases run: "
             f"{', '.join(data['phases_run'])}", ""]
    if data["tests"]:
        t = data["tests"]
        lines += [f"**tests/test_cuda.py**: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped"
                  + (f" (failed: {', '.join(t['failed_tests'])})" if t["failed_tests"] else ""), ""]
    lines += train_step_table(data["train_step"], markdown=True)
    if data["hellaswag"]:
        lines += ["", "| HellaSwag scorer | examples/s | vs one at a time | acc_norm |", "|---|---:|---:|---:|"]
        lines += [f"| {r['contender']} | {r['examples_per_sec']:.1f} | {r['ratio_vs_one_at_a_time']:.2f}x | "
                  f"{r['acc_norm']:.4f} |" for r in data["hellaswag"]]
    if data["char"]:
        c = data["char"]
        lines += ["", f"**examples/gpt_char.py --config {c['config']}**: {c['steps']} steps in {c['seconds']:.0f} s, "
                  f"train loss {c['train_loss']:.4f}, val loss {c['val_loss']:.4f}"]
    if data["errors"]:
        lines += ["", "Errors:"] + [f"- {e['phase']} {e['what']}: {e['message'].strip().splitlines()[-1:]}"
                                    for e in data["errors"]]
    return "\n".join(lines) + "\n"


def train_step_table(rows: list[dict], markdown: bool = False) -> list[str]:
    if not rows:
        return []

    def fmt(value, pattern):
        return "-" if value is None else pattern.format(value)

    cells = [[r["phase"], r["contender"], str(r["batch"]), fmt(r["ms_per_step"], "{:.1f}"),
              fmt(r["tokens_per_sec"], "{:,.0f}"), fmt(r["peak_mem_gib"], "{:.1f}"),
              fmt(r["mfu"] and 100 * r["mfu"], "{:.1f}%"), fmt(r["ratio_vs_hf"], "{:.2f}x")] for r in rows]
    header = ["phase", "contender", "B", "ms/step", "tokens/s", "peak GiB", "MFU", "vs HF"]
    if markdown:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * 6] + \
            ["| " + " | ".join(c) + " |" for c in cells]
    widths = [max(len(x) for x in column) for column in zip(header, *cells)]
    return ["  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(line, widths)))
            for line in [header, *cells]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("phases", nargs="?", default=",".join(DEFAULT_PHASES),
                        help="comma-separated, of " + ",".join(PHASES) + " (default: all but modern)")
    parser.add_argument("--budget", type=float, default=540,
                        help="seconds; a measurement that would end later (judged by the phase's previous one) "
                             "is skipped")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        print(f"error: unknown phase(s) {', '.join(unknown)}; choose from {','.join(PHASES)}", file=sys.stderr)
        return 2
    start = time.monotonic()
    mode = "cuda" if torch.cuda.is_available() else "cpu"
    settings = dict(SETTINGS[mode])
    if os.environ.get("GPU_SUITE_BATCHES"):  # e.g. GPU_SUITE_BATCHES=16: a batch size a budget cut off
        settings["batches"] = [int(b) for b in os.environ["GPU_SUITE_BATCHES"].split(",")]
    results = Results(Path(args.out_dir), phases, settings["batches"])
    results.save()
    print(f"gpu_suite: {results.data['device']} ({mode} mode), torch {results.data['torch']}, "
          f"transformers {results.data['transformers']}; phases {','.join(phases)}", flush=True)
    work = []
    for phase in PHASES:
        if phase not in phases:
            continue
        if phase in ("step", "loop"):
            contenders = settings[f"{phase}_contenders"]
            work += [(phase, f"B={b}", lambda c=contenders, b=b, p=phase: run_throughput(results, p, settings, c, b))
                     for b in settings["batches"]]
        elif phase == "modern":  # the loop (Muon and the modern architecture) on the modern recipe of the same size
            modern = {**settings, "preset": settings["modern_preset"]}
            contenders = [c for c in settings["loop_contenders"] if c.startswith("loop")]
            work.append((phase, f"B={settings['batches'][0]}",
                         lambda: run_throughput(results, "modern", modern, contenders, settings["batches"][0])))
        else:
            runner = {"tests": run_tests, "hellaswag": run_hellaswag, "char": run_char}[phase]
            work.append((phase, phase, lambda r=runner: r(results, mode) if r is run_tests else r(results, settings)))
    last_seconds = {}  # a phase's previous measurement: the estimate of its next one
    for phase, what, measure in work:
        elapsed = time.monotonic() - start
        if elapsed + last_seconds.get(phase, 0) > args.budget:
            results.error(phase, what, f"skipped: it would not end within the {args.budget:.0f} s budget "
                          f"({elapsed:.0f} s spent); run it in another command")
            continue
        try:
            measure()
        except Exception as error:  # one failed measurement must not lose the others
            results.error(phase, what, f"{type(error).__name__}: {error}")
        last_seconds[phase] = time.monotonic() - start - elapsed
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print("\n".join(["", f"gpu_suite results ({results.out_dir / 'results.json'}):"]
                    + train_step_table(results.data["train_step"])), flush=True)
    t = results.data["tests"]
    if t:
        print(f"tests/test_cuda.py: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")
    for r in results.data["hellaswag"]:
        print(f"HellaSwag {r['contender']}: {r['examples_per_sec']:.1f} examples/s "
              f"({r['ratio_vs_one_at_a_time']:.2f}x)")
    if results.data["errors"]:
        print(f"{len(results.data['errors'])} error(s): see results.md")
    return 1 if results.data["errors"] or (t and t["failed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
