"""run_pretrain.py's settings: HfArgumentParser over RunConfig (public API only), transformers names with the old
ones as aliases, flags > --config_file > the preset's recipe > RunConfig's defaults, the same checks for file and
recipe values as for flags, the batch arithmetic, precision from `accelerate launch`, and starting from pretrained
weights."""

import ast
import dataclasses
import typing

import pytest
import torch
from user_errors import REPO, assert_user_error, pretrain_main, run_cli, snapshot, two_process_launch

from nanogpt2.batch import settle_batch, steps_for_epochs
from nanogpt2.configuration_nanogpt2 import ARCHITECTURE, PRESETS, RECIPE_DIR
from nanogpt2.run_config import (
    FIELDS,
    TYPES,
    SettingsParser,
    load_config_file,
    resolve_config,
)


def main_in_process(args, capsys) -> tuple[int, str]:
    """run_pretrain.main() in this process: (exit code, stderr)."""
    code = pretrain_main(args)
    return code, capsys.readouterr().err


def test_help_shows_each_setting_once_with_its_aliases():
    text = SettingsParser().format_help()
    for name, field in FIELDS.items():
        assert field.metadata["help"], name
        assert text.count(f"--{name} ") + text.count(f"--{name},") + text.count(f"--{name}\n") >= 1, name
    # an alias sits on its setting's line, and the hyphenated spellings are accepted but not listed
    assert "--per_device_train_batch_size, --micro_batch_size PER_DEVICE_TRAIN_BATCH_SIZE" in text
    assert "--block_size, --sequence_length BLOCK_SIZE" in text
    assert "--torch_compile, --compile [{auto,true,false}]" in text
    assert "--no_torch_compile, --no-compile" in text and "--no_tf32 " in text
    assert "--max-steps" not in text and "--no-tf32" not in text and "(default: None)" not in text
    sections = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert sections == ["options:", "model:", "data:", "batch:", "optimizer and learning-rate schedule:",
                        "precision and speed:", "evaluation, logging and checkpoints:", "publishing to the Hub:"]
    assert resolve_config(["--max-steps", "5"]).max_steps == 5


@pytest.mark.parametrize("old,new,value", [
    ("--micro_batch_size", "--per_device_train_batch_size", "8"),
    ("--sequence_length", "--block_size", "512"),
    ("--tokenizer", "--tokenizer_name", "gpt2"),
    ("--hub_private", "--hub_private_repo", "true"),
])
def test_old_names_are_aliases(old, new, value):
    field = new.lstrip("-")
    assert getattr(resolve_config([old, value]), field) == getattr(resolve_config([new, value]), field) != \
        getattr(resolve_config([]), field)


@pytest.mark.parametrize("args,value", [([], "auto"), (["--compile"], "true"), (["--torch_compile"], "true"),
                                        (["--compile", "false"], "false"), (["--no-compile"], "false"),
                                        (["--no_torch_compile"], "false"), (["--torch_compile", "auto"], "auto")])
def test_compile_is_tri_state(args, value):
    from nanogpt2.run_config import compile_enabled

    config = resolve_config(args)
    assert config.torch_compile == value
    assert compile_enabled(config, "cuda") == (value != "false") and compile_enabled(config, "cpu") == (value == "true")


def test_layers_flags_over_file_over_preset_over_recipe(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("preset: tiny\nlearning_rate: 0.01\nmax_steps: 7\nmicro_batch_size: 8\ncompile: false\n"
                           "hellaswag_limit: null\ngradient_accumulation_steps: null\n")
    config = resolve_config(["--config_file", str(config_file), "--max_steps", "9"])
    assert (config.max_steps, config.learning_rate, config.per_device_train_batch_size) == (9, 0.01, 8)  # flag, file
    assert (config.block_size, config.warmup_steps, config.adam_beta2) == (128, 20, 0.95)  # preset, recipe
    assert config.torch_compile == "false" and config.hellaswag_limit is None  # null unsets the preset's 200
    json_file = tmp_path / "run.json"
    json_file.write_text('{"preset": "tiny", "lr_scheduler_type": "warmup_stable_decay", "bf16": true}')
    config = resolve_config(["--config_file", str(json_file)])
    assert (config.lr_scheduler_type, config.mixed_precision) == ("warmup_stable_decay", "bf16")


def test_choices_take_any_case_on_the_command_line():
    config = resolve_config(["--mixed_precision", "BF16", "--lr_scheduler_type", "Linear", "--preset", "TINY"])
    assert (config.mixed_precision, config.lr_scheduler_type, config.preset) == ("bf16", "linear", "tiny")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_recipe_is_a_config_file_of_its_preset(preset):
    recipe = load_config_file(RECIPE_DIR / f"{preset}.yaml")  # the config-file checks: keys, types, bounds
    assert recipe["preset"][0] == preset
    assert {name: v for name, (v, _) in recipe.items() if name in ARCHITECTURE} == PRESETS[preset]
    config = resolve_config(["--preset", preset])
    assert all(getattr(config, name) == value for name, (value, _) in recipe.items() if name not in ARCHITECTURE)
    assert all(getattr(config, name) is None for name in ARCHITECTURE)  # the shape is the preset's, not an override
    settle_batch(config, 1)


def test_runconfig_defaults_are_the_124m_recipe():
    recipe = load_config_file(RECIPE_DIR / "gpt2-124m.yaml")
    assert {name: value for name, (value, _) in recipe.items() if name not in ARCHITECTURE} == {
        name: FIELDS[name].default for name in recipe if name not in ARCHITECTURE}


def test_a_copied_recipe_passed_as_config_file_is_the_preset(tmp_path):
    from nanogpt2 import NanoGPT2Config

    copied = tmp_path / "my-tiny.yaml"
    copied.write_text((RECIPE_DIR / "tiny.yaml").read_text())
    preset, config = resolve_config(["--preset", "tiny"]), resolve_config(["--config_file", str(copied)])
    shape = {name: getattr(config, name) for name in ARCHITECTURE  # set by the file, so overrides of the preset
             if getattr(config, name) is not None}
    assert dataclasses.replace(config, **dict.fromkeys(ARCHITECTURE)) == preset
    assert NanoGPT2Config.from_preset(config.preset, **shape).to_dict() == NanoGPT2Config.from_preset("tiny").to_dict()
    settle_batch(config, 2)  # the file's micro-batch fits 2 processes as the preset's does
    settle_batch(preset, 2)
    assert config.per_device_train_batch_size == preset.per_device_train_batch_size == 8
    copied.write_text(copied.read_text().replace("n_layer: 4", "n_layer: 2").replace("max_steps: 200", "max_steps: 9"))
    edited = resolve_config(["--config_file", str(copied), "--max_steps", "5"])
    assert (edited.n_layer, edited.max_steps, edited.block_size) == (2, 5, 128)


def test_help_lists_the_recipes_and_shows_the_presets_defaults(capsys):
    with pytest.raises(SystemExit) as exit:
        resolve_config(["--preset", "tiny", "--help"])
    out = capsys.readouterr().out
    words = " ".join(out.split())
    assert exit.value.code == 0 and "(default: 2048)" in words and "(default: runs/tiny)" in words
    recipes = out[out.index("recipes for --preset"):].splitlines()[2:]
    assert [line.split()[0] for line in recipes] == list(PRESETS) == [
        "gpt2-124m", "gpt2-124m-modern", "gpt2-350m", "gpt2-774m", "gpt2-1558m", "tiny", "tiny-modern"]


def test_run_config_uses_only_public_names_of_argparse_and_transformers():
    """No leading-underscore attribute of an object the package did not define, and no private import."""
    for module in ("run_config", "batch"):
        tree = ast.parse((REPO / "nanogpt2" / f"{module}.py").read_text())
        own = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        private = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                   and node.attr.startswith("_") and not node.attr.startswith("__") and node.attr not in own]
        private += [f"def {node.name}" for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                    and node.name.startswith("_") and not node.name.startswith("__")]
        private += [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    for alias in node.names if alias.name.startswith("_")]
        assert private == [], (module, private)


@pytest.mark.parametrize("text,named", [
    ('streaming: "true"\n', "run.yaml: streaming must be true or false"),  # a quoted boolean
    ("max_steps: 10.5\n", "run.yaml: max_steps must be an integer"),  # a float where an int belongs
    ("max_steps: 10.0\n", "run.yaml: max_steps must be an integer"),
    ("max_steps: true\n", "run.yaml: max_steps must be an integer"),
    ("max_steps: null\n", "run.yaml: max_steps must be an integer"),  # derived only from --num_train_epochs
    ("lr_scheduler_type: cosine_with_restarts\n", "run.yaml: lr_scheduler_type 'cosine_with_restarts' is not a choice"),
    ("preset: gpt5\n", "run.yaml: preset 'gpt5' is not a choice"),
    ("hub_strategy: all_checkpoints\n", "run.yaml: hub_strategy"),
    ("max_steps: 0\n", "run.yaml: max_steps must be at least 1 (got 0)"),
    ("save_total_limit: 0\n", "run.yaml: save_total_limit must be at least 1"),
    ("learning_rate: -0.1\n", "run.yaml: learning_rate must be above 0.0"),
    ("validation_split_percentage: 100\n", "run.yaml: validation_split_percentage must be below 100"),
    ("dropout: 1.0\n", "run.yaml: dropout must be below 1.0"),
    ("micro_batch_size: -1\n", "run.yaml: micro_batch_size must be at least 1"),  # an alias is named as written
    ("learning_rat: 0.01\n", "unknown setting(s) learning_rat"),
    ("micro_batch_size: 8\nper_device_train_batch_size: 8\n", "the same setting"),
    ("max_steps: [1\n", "is not valid YAML"),
    ("- max_steps\n", "must hold a mapping"),
])
def test_config_file_values_get_the_checks_of_flags(tmp_path, text, named):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(text)
    with pytest.raises(ValueError, match=None) as error:
        resolve_config(["--config_file", str(config_file)])
    assert named in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("args,named", [
    (["--max_steps", "1.5"], "--max_steps"), (["--max_steps", "0"], "--max_steps must be at least 1"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1"),
    (["--warmup_steps", "-1"], "--warmup_steps must be at least 0"),
    (["--min_lr_ratio", "1.5"], "--min_lr_ratio must be at most 1.0"),
    (["--lr_scheduler_type", "polynomial"], "--lr_scheduler_type"),
    (["--compile", "maybe"], "--compile"),
    (["--streaming", "perhaps"], "--streaming"),
    (["--num_train_epochs", "1", "--max_steps", "5"], "--max_steps and --num_train_epochs"),
    (["--num_train_epochs", "1", "--streaming"], "--num_train_epochs needs data of known size, not --streaming"),
    (["--bf16", "--fp16"], "--bf16 and --fp16"),
    (["--bf16", "--mixed_precision", "no"], "--bf16 contradicts --mixed_precision"),
    (["--model_name_or_path", "ckpt", "--n_layer", "2"],
     "--n_layer: the model's shape comes from --model_name_or_path"),
    (["--data_dir", "a", "--train_file", "b"], "--data_dir and --train_file"),
])
def test_flag_errors_name_the_flag(args, named):
    with pytest.raises(ValueError) as error:
        resolve_config(args)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_every_numeric_setting_has_bounds():
    for name, kind in TYPES.items():
        base = next(a for a in typing.get_args(kind) or (kind,) if a is not type(None))
        if base in (int, float):
            assert {"at_least", "above", "at_most", "below"} & set(FIELDS[name].metadata), name


def test_a_bad_config_file_is_one_line_and_changes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    config_file = tmp_path / "run.yaml"
    config_file.write_text(f"preset: tiny\noutput_dir: {run_dir}\neval_steps: 2.5\n")
    before = snapshot(tmp_path)
    code, err = main_in_process(["--config_file", config_file], capsys)
    assert code == 1 and [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {config_file}: eval_steps must be an integer, got 2.5 (float)"]
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_bad_config_file_as_a_user_runs_it(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(f"preset: tiny\noutput_dir: {tmp_path / 'run'}\nlr_scheduler_type: cosine_restarts\n")
    before = snapshot(tmp_path)
    line = assert_user_error(run_cli(["run_pretrain.py", "--config_file", config_file]), f"{config_file}: "
                             "lr_scheduler_type", before=before, roots=[tmp_path])
    assert "cosine, linear, constant, warmup_stable_decay" in line


@pytest.mark.parametrize("args,world,expected", [
    (["--preset", "tiny"], 1, (16, 2048, 1)),
    (["--preset", "tiny"], 2, (8, 2048, 1)),  # the preset's micro-batch is made to fit 2 processes
    (["--preset", "tiny", "--total_batch_size", "1024"], 2, (4, 1024, 1)),
    (["--preset", "tiny", "--gradient_accumulation_steps", "2"], 1, (16, 4096, 2)),  # the total is derived
    (["--preset", "tiny", "--gradient_accumulation_steps", "2", "--total_batch_size", "8192"], 2, (16, 8192, 2)),
    ([], 1, (64, 524288, 8)), ([], 8, (64, 524288, 1)),
])
def test_batch_arithmetic(monkeypatch, args, world, expected):
    monkeypatch.setenv("WORLD_SIZE", "3")  # not read: the loop passes its Accelerator's number of processes
    config = resolve_config(args)
    assert settle_batch(config, world) == expected[2]
    assert (config.per_device_train_batch_size, config.total_batch_size, config.gradient_accumulation_steps) == expected


@pytest.mark.parametrize("args,world,named", [
    (["--preset", "tiny", "--per_device_train_batch_size", "16"], 2,  # an explicit micro-batch is never changed
     "--total_batch_size 2048 is not divisible by --per_device_train_batch_size 16"),
    (["--gradient_accumulation_steps", "3", "--total_batch_size", "524288"], 1, "--gradient_accumulation_steps 3"),
    (["--total_batch_size", "300"], 1, "--total_batch_size 300 is not divisible"),
])
def test_batch_errors_name_the_flags(args, world, named):
    config = resolve_config(args)
    with pytest.raises(ValueError) as error:
        settle_batch(config, world)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_n_positions_sets_the_context_and_the_sequence_length():
    config = resolve_config(["--preset", "tiny", "--n_positions", "64"])
    settle_batch(config, 1)
    assert (config.n_positions, config.block_size, config.gradient_accumulation_steps) == (64, 64, 2)


def test_epochs_become_steps():
    assert steps_for_epochs(1, 10_000, 2048) == 5 and steps_for_epochs(0.5, 10_000, 2048) == 3
    assert steps_for_epochs(0.001, 10_000, 2048) == 1


@pytest.mark.parametrize("flags,env,expected", [
    ([], {}, ("no", "default on CPU")),
    ([], {"ACCELERATE_MIXED_PRECISION": "bf16"}, ("bf16", "accelerate launch")),
    ([], {"ACCELERATE_MIXED_PRECISION": "no"}, ("no", "accelerate launch")),
    (["--bf16"], {"ACCELERATE_MIXED_PRECISION": "no"}, ("bf16", "run_pretrain.py flag")),
    (["--mixed_precision", "no"], {"ACCELERATE_MIXED_PRECISION": "fp16"}, ("no", "run_pretrain.py flag")),
])
def test_accelerate_launch_precision_wins_over_defaults_not_over_flags(monkeypatch, flags, env, expected):
    from nanogpt2.run_setup import resolve_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_precision(resolve_config(flags), cuda=False) == expected
    assert resolve_precision(resolve_config([]), cuda=True)[0] == env.get("ACCELERATE_MIXED_PRECISION", "bf16")


def test_a_hub_id_that_does_not_download_says_it_is_not_local_either(tmp_path, monkeypatch):
    import types

    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    from nanogpt2.errors import DataError
    from nanogpt2.sources import local_or_hub_dir

    def not_found(repo_id, **kwargs):
        url = f"https://huggingface.co/api/models/{repo_id}"
        raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for url: {url}",
                                      response=types.SimpleNamespace(headers={}, request=None, status_code=404))

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)  # the network, answering 404
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(DataError) as error:
        local_or_hub_dir("runs/nope", "checkpoint", ["*.json"])
    assert str(error.value).startswith("checkpoint runs/nope is not a local directory, and could not be downloaded "
                                       "from the Hugging Face Hub (RepositoryNotFoundError: 404 Client Error")
    assert str(error.value).endswith("; pass a local checkpoint directory")


@pytest.mark.parametrize("flag", ["--model_name_or_path", "--tokenizer_name", "--config_name"])
def test_hub_ids_offline_are_one_clear_line(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    code, err = main_in_process(["--preset", "tiny", flag, "someone/gpt2-like", "--output_dir", tmp_path / "run",
                                 "--report_to", "none", "--skip_hellaswag"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith(f"error: {flag} someone/gpt2-like is not a local directory, and the Hugging Face Hub "
                                "is offline"), errors
    assert not (tmp_path / "run").exists()


def _first_step(tmp_path, name, model_dir, text_file):
    from nanogpt2.training import PretrainingLoop

    config = resolve_config([str(a) for a in [
                             "--preset", "tiny", "--model_name_or_path", model_dir, "--train_file", text_file,
                             "--per_device_train_batch_size", "2", "--block_size", "32", "--total_batch_size", "128",
                             "--max_steps", "1", "--eval_tokens", "64", "--report_to", "none", "--skip_hellaswag",
                             "--output_dir", tmp_path / name]])
    with PretrainingLoop(config) as loop:
        position = loop.train_loader.state_dict()
        batches = [loop.train_loader.next_batch() for _ in range(loop.grad_accum)]
        loop.train_loader.load_state_dict(position)
        assert loop.grad_accum == 2 and not loop.optimizer.state  # a fresh optimizer
        return loop, batches, loop.train_step()[0]


@pytest.mark.parametrize("kind", ["hf_gpt2", "nanogpt2"])
def test_model_name_or_path_starts_from_the_pretrained_weights(tmp_path, hf_gpt2_fixture_dir, tinyshakespeare_file,
                                                                kind):
    from transformers import GPT2LMHeadModel

    from nanogpt2.convert import convert_from_gpt2

    text = tmp_path / "text.txt"
    text.write_text(tinyshakespeare_file.read_text()[:20_000])
    model_dir = hf_gpt2_fixture_dir
    if kind == "nanogpt2":
        model_dir = tmp_path / "nanogpt2-checkpoint"
        convert_from_gpt2(str(hf_gpt2_fixture_dir), str(model_dir), pad_vocab_multiple=64)
    loop, batches, first_loss = _first_step(tmp_path, kind, model_dir, text)
    assert loop.raw_model.config.vocab_size == 50304 and loop.raw_model.config.n_embd == 2

    reference = GPT2LMHeadModel.from_pretrained(hf_gpt2_fixture_dir).eval()  # transformers' own GPT-2
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(reference(input_ids=x).logits.flatten(0, 1), y.flatten())
                  for x, y in batches]
    assert first_loss == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)
    assert first_loss == pytest.approx(10.8249, abs=0.01)  # ln(50257) = 10.825: the fixture's random weights


def test_num_train_epochs_and_config_name_in_the_loop(tmp_path, hf_gpt2_fixture_dir, tinyshakespeare_file):
    from safetensors.torch import load_file

    from nanogpt2.training import PretrainingLoop

    text = tmp_path / "text.txt"
    text.write_text(tinyshakespeare_file.read_text()[:20_000])
    config = resolve_config([str(a) for a in [
        "--preset", "tiny", "--config_name", hf_gpt2_fixture_dir, "--train_file", text, "--num_train_epochs", "2",
        "--per_device_train_batch_size", "2", "--block_size", "32", "--total_batch_size", "128", "--eval_tokens", "64",
        "--report_to", "none", "--skip_hellaswag", "--output_dir", tmp_path / "run"]])
    with PretrainingLoop(config) as loop:
        assert config.max_steps == steps_for_epochs(2, loop.train_loader.total_tokens, 128) > 1
    # the fixture's architecture (1 layer, width 2), its weights not loaded
    model = loop.raw_model.config
    assert (model.n_layer, model.n_embd, model.vocab_size) == (1, 2, 50304)
    pretrained = load_file(hf_gpt2_fixture_dir / "model.safetensors")
    wpe = next(v for k, v in pretrained.items() if k.endswith("wpe.weight"))
    assert not torch.equal(loop.raw_model.transformer.wpe.weight.detach(), wpe)


@pytest.mark.slow
@pytest.mark.two_processes
def test_tiny_preset_under_the_two_process_cpu_config(tmp_path, tinyshakespeare_file):
    """accelerate_configs/cpu_2proc.yaml with the tiny preset's defaults (micro-batch fitted), the launcher's
    precision printed. (An error under the launcher, printed once: test_user_errors_training.)"""
    text = tmp_path / "text.txt"
    text.write_text(tinyshakespeare_file.read_text()[:200_000])
    launch = [*two_process_launch()[1:], "--mixed_precision", "bf16", "run_pretrain.py", "--preset", "tiny",
              "--train_file", text]
    result = run_cli(launch + ["--max_steps", 2, "--skip_hellaswag", "--num_samples", 0, "--report_to", "none",
                               "--output_dir", tmp_path / "run"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nanogpt2: 2 process(es) on cpu, mixed precision bf16 (accelerate launch)" in result.stdout
    assert "2,048 tokens/step = 8 x 128 x 2 x 1 accumulation" in result.stdout + result.stderr
    assert (tmp_path / "run" / "checkpoint-2" / "model.safetensors").is_file()
