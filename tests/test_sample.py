"""python -m nanogpt2.sample: a training run's checkpoint, its run folder, a converted GPT-2 checkpoint from
../shared/data, a character-level checkpoint; streaming; seeds; every bad input as one `error:` line."""

import sys
from pathlib import Path

import pytest
import torch
from user_errors import pretrain_main

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.checkpoint import save_model_checkpoint
from nanogpt2.convert import convert_from_gpt2
from nanogpt2.sample import SEPARATOR, generation_settings, main, parse_args

REPO = Path(__file__).resolve().parents[1]
STEPS = 2
TINY_RUN = ["--preset", "tiny", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--micro_batch_size", "2",
            "--sequence_length", "32", "--total_batch_size", "64", "--warmup_steps", "1", "--max_steps", str(STEPS),
            "--save_steps", "1", "--eval_steps", str(STEPS), "--eval_tokens", "128", "--num_samples", "0",
            "--skip_hellaswag", "--report_to", "none"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tinyshakespeare_file):
    """A tiny pretraining run (run_pretrain.py in this process): checkpoint-1 and checkpoint-2."""
    out = tmp_path_factory.mktemp("run")
    assert pretrain_main(TINY_RUN + ["--train_file", str(tinyshakespeare_file), "--output_dir", str(out),
                                         "--overwrite_output_dir"]) == 0
    assert (out / f"checkpoint-{STEPS}").is_dir() and (out / "checkpoint-1").is_dir()
    return out


@pytest.fixture(scope="module")
def converted_gpt2(tmp_path_factory, hf_gpt2_fixture_dir):
    """The third-party HF GPT-2 checkpoint of ../shared/data, converted by `python -m nanogpt2.convert from-gpt2`."""
    out = tmp_path_factory.mktemp("converted") / "gpt2-nanogpt2"
    convert_from_gpt2(str(hf_gpt2_fixture_dir), str(out))
    return out


@pytest.fixture(scope="module")
def char_checkpoint(tmp_path_factory, tinyshakespeare_file):
    """A character-level checkpoint as examples/gpt_char.py saves it (65 characters, no unknown token)."""
    sys.path.insert(0, str(REPO / "examples"))
    from char_data import CharTokenizer

    tokenizer = CharTokenizer.from_text(tinyshakespeare_file.read_text())
    torch.manual_seed(0)
    config = NanoGPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=65, tokenizer_vocab_size=65,
                            bos_token_id=None, eos_token_id=None)
    out = tmp_path_factory.mktemp("char") / "gpt-char"
    save_model_checkpoint(NanoGPT2ForCausalLM(config), out, tokenizer=tokenizer)
    return out


def sample(capsys, *args):
    """(exit code, stdout, stderr lines) of main() in this process."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def greedy_text(model, tokenizer, prompt, max_new_tokens):
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.eval().generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def test_streams_a_training_run_checkpoint_token_by_token(run_dir, capsys, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

    chunks = []
    finalize = TextStreamer.on_finalized_text

    def record(self, text, stream_end=False):
        chunks.append(text)
        finalize(self, text, stream_end)

    monkeypatch.setattr(TextStreamer, "on_finalized_text", record)
    checkpoint = run_dir / f"checkpoint-{STEPS}"
    code, out, err = sample(capsys, checkpoint, "--prompt", "ROMEO: I", "--max_new_tokens", 12, "--temperature", 0)
    assert code == 0 and err == [f"sampling from {checkpoint} (1,630,688 parameters, cpu, float32)"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint)
    assert out == greedy_text(model, tokenizer, "ROMEO: I", 12) + "\n"  # what model.generate gives, printed
    assert len(chunks) > 2 and "".join(chunks) + "\n" == out  # printed piece by piece as tokens came


def test_a_run_folder_samples_its_latest_checkpoint(run_dir, capsys):
    code, out, err = sample(capsys, run_dir, "--prompt", "KING:", "--max_new_tokens", 5, "--seed", 3)
    assert code == 0 and err[0].startswith(f"sampling from {run_dir / f'checkpoint-{STEPS}'} (")
    assert out.startswith("KING:") and out == sample(capsys, run_dir / f"checkpoint-{STEPS}", "--prompt", "KING:",
                                                      "--max_new_tokens", 5, "--seed", 3)[1]


def test_several_samples_one_after_another_and_the_seed_repeats_them(run_dir, capsys):
    args = [run_dir, "--num_samples", 3, "--max_new_tokens", 6, "--top_k", 50, "--top_p", 0.95, "--seed", 7]
    code, out, _ = sample(capsys, *args)
    assert code == 0 and len(out.split(SEPARATOR + "\n")) == 3
    assert sample(capsys, *args)[1] == out
    assert sample(capsys, *args[:-1], 8)[1] != out


def test_a_converted_gpt2_checkpoint_samples_what_transformers_gpt2_generates(converted_gpt2, hf_gpt2_fixture_dir,
                                                                                capsys):
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    reference = greedy_text(GPT2LMHeadModel.from_pretrained(hf_gpt2_fixture_dir),
                            GPT2TokenizerFast.from_pretrained(hf_gpt2_fixture_dir), "Hello, I'm a language model,", 8)
    for checkpoint in (converted_gpt2, hf_gpt2_fixture_dir):  # converted on disk, or in memory from the HF folder
        code, out, _ = sample(capsys, checkpoint, "--prompt", "Hello, I'm a language model,", "--max_new_tokens", 8,
                              "--temperature", 0)
        assert code == 0 and out == reference + "\n"


def test_without_a_prompt_gpt2_starts_from_endoftext_and_a_char_model_from_a_newline(converted_gpt2,
                                                                                      char_checkpoint, capsys):
    code, out, _ = sample(capsys, converted_gpt2, "--max_new_tokens", 4)
    assert code == 0 and "<|endoftext|>" not in out and out.strip()
    code, out, _ = sample(capsys, char_checkpoint, "--max_new_tokens", 10, "--temperature", 0)
    assert code == 0 and out.startswith("\n") and len(out) == 1 + 10 + 1


def test_the_prompt_comes_from_a_file(run_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("First Citizen:\nBefore we proceed", encoding="utf-8")
    code, out, _ = sample(capsys, run_dir, "--prompt_file", prompt, "--max_new_tokens", 3, "--temperature", 0)
    assert code == 0 and out.startswith("First Citizen:\nBefore we proceed")


def test_compile_asks_for_transformers_compiled_generation(tmp_path):
    from transformers import CompileConfig

    args = parse_args([str(tmp_path), "--compile", "--temperature", "0"])
    settings = generation_settings(args, prompt_length=5, context=64, tokenizer=type("T", (), {
        "pad_token_id": None, "eos_token_id": 0})())
    assert settings["cache_implementation"] == "static" and isinstance(settings["compile_config"], CompileConfig)
    assert settings["max_new_tokens"] == 59 and settings["do_sample"] is False  # the default fills what is left


def bad_inputs():
    """(name, arguments given the fixtures' folders, what the one error line says)."""
    long_prompt = " word" * 80
    return [
        ("empty-folder", lambda f: [f["tmp"]], "is not a checkpoint (no config.json) nor a run folder"),
        ("a-file", lambda f: [f["file"]], "is a file; pass a checkpoint folder"),
        ("missing-offline", lambda f: [f["tmp"] / "nope"], "no such directory"),
        ("hub-id-offline", lambda f: ["openai-community/gpt2"], "the Hugging Face Hub is offline"),
        ("pickle-only", lambda f: [f["pickled"]], "holds only pickle weights (pytorch_model.bin), refused"),
        ("prompt-longer-than-context", lambda f: [f["ckpt"], "--prompt", long_prompt],
         "--prompt is 80 tokens, the model's context is 64"),
        ("prompt-file-longer-than-context", lambda f: [f["ckpt"], "--prompt_file", f["long"]],
         "is 80 tokens, the model's context is 64"),
        ("prompt-plus-new-tokens", lambda f: [f["ckpt"], "--prompt", "Hi", "--max_new_tokens", 64],
         "--max_new_tokens 64: the prompt (1 token) + 64 exceeds the model's context of 64; use at most 63"),
        ("negative-temperature", lambda f: [f["ckpt"], "--temperature", -0.5], "--temperature -0.5 must be at least 0"),
        ("top-p-zero", lambda f: [f["ckpt"], "--top_p", 0], "--top_p 0.0 must be in (0, 1]"),
        ("top-p-above-one", lambda f: [f["ckpt"], "--top_p", 1.5], "--top_p 1.5 must be in (0, 1]"),
        ("negative-top-k", lambda f: [f["ckpt"], "--top_k", -1], "--top_k -1 must be at least 0"),
        ("no-samples", lambda f: [f["ckpt"], "--num_samples", 0], "--num_samples 0 must be at least 1"),
        ("no-new-tokens", lambda f: [f["ckpt"], "--max_new_tokens", 0], "--max_new_tokens 0 must be at least 1"),
        ("greedy-several", lambda f: [f["ckpt"], "--temperature", 0, "--num_samples", 2], "would be the same text"),
        ("empty-prompt", lambda f: [f["ckpt"], "--prompt", ""], "--prompt is empty"),
        ("missing-prompt-file", lambda f: [f["ckpt"], "--prompt_file", f["tmp"] / "none.txt"], "does not exist"),
        ("characters-outside-the-vocabulary", lambda f: [f["char"], "--prompt", "café"],
         "has characters the checkpoint's vocabulary lacks: 'é'"),
        ("no-such-device", lambda f: [f["ckpt"], "--device", "gpu7"], "--device 'gpu7' is not a device"),
        ("no-cuda-here", lambda f: [f["ckpt"], "--device", "cuda"], "no CUDA device here"),
    ]


@pytest.mark.parametrize("name,arguments,message", bad_inputs(), ids=[case[0] for case in bad_inputs()])
def test_bad_input_is_one_error_line_and_exit_1(name, arguments, message, char_checkpoint, tmp_path, capsys):
    if name == "no-cuda-here" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    ckpt = tmp_path / "ckpt"
    torch.manual_seed(0)
    save_model_checkpoint(NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64)), ckpt)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((ckpt / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"never unpickled")
    (tmp_path / "long.txt").write_text(" word" * 80)
    (tmp_path / "empty").mkdir()
    folders = {"tmp": tmp_path / "empty", "file": tmp_path / "long.txt", "ckpt": ckpt, "pickled": pickled,
               "long": tmp_path / "long.txt", "char": char_checkpoint}
    code, out, err = sample(capsys, *arguments(folders))
    assert code == 1 and out == ""
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.filterwarnings("ignore:'nanogpt2.sample' found in sys.modules")  # this module imported it first
def test_python_dash_m_runs_main_and_exits_with_its_code(converted_gpt2, capsys, monkeypatch):
    """`python -m nanogpt2.sample ...` as runpy runs it (the same __main__ path, without a new interpreter)."""
    import runpy

    for argv, code in (([str(converted_gpt2), "--prompt", "Hello", "--max_new_tokens", "3", "--temperature", "0"], 0),
                       ([str(converted_gpt2), "--temperature", "-1"], 1)):
        monkeypatch.setattr(sys, "argv", ["python -m nanogpt2.sample", *argv])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("nanogpt2.sample", run_name="__main__")
        assert exit_info.value.code == code
    captured = capsys.readouterr()
    assert captured.out.startswith("Hello") and captured.err.splitlines()[-1].startswith("error: --temperature -1.0")


def test_help_names_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0 and "a run folder (its latest checkpoint-N is used)" in help_text
    for flag in ("--prompt", "--prompt_file", "--num_samples", "--max_new_tokens", "--temperature", "--top_k",
                 "--top_p", "--seed", "--device", "--dtype", "--compile"):
        assert flag in help_text
