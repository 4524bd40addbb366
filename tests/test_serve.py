"""Serving a checkpoint with transformers' own OpenAI-compatible server (`transformers serve`) and asking it with
the `openai` Python client, as the README shows: on 127.0.0.1 only, each server bounded in time and always
killed (its whole process group: the server spawns a model process).

transformers 5.25's server loads a model as `getattr(transformers, config.architectures[0])`, so it cannot load a
class that transformers does not export, with or without --trust-remote-code: a nanogpt2 checkpoint is served
after `python -m nanogpt2.convert to-gpt2` (a native GPT2LMHeadModel, the same function). The direct attempt is
recorded as a strict expected failure, which starts passing (and so fails, asking for a README update) the day
transformers serves remote-code models."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from user_errors import free_port

from nanogpt2 import NanoGPT2Config, NanoGPT2ForCausalLM
from nanogpt2.checkpoint import save_model_checkpoint
from nanogpt2.convert import convert_to_gpt2

PROMPT = "Hello, I'm a language model,"
STARTUP_LIMIT_S = 240  # a cold start on a busy 2-core machine; the server is killed past it
# transformers 5.25's failure for a model class it does not export (cli/serving/model_manager.py, _load_model)
NOT_EXPORTED = "AttributeError: module transformers has no attribute NanoGPT2ForCausalLM"


class ServerRefusedTheModel(Exception):
    """`transformers serve` answered HTTP 500 instead of a completion: the message is its error line."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = NanoGPT2ForCausalLM(NanoGPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64))
    return save_model_checkpoint(model, tmp_path_factory.mktemp("serve") / "tiny")


def local_greedy(checkpoint, max_new_tokens):
    """What the checkpoint itself generates greedily after PROMPT, without the prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


class Server:
    """`transformers serve` on 127.0.0.1 (the console script's own entry point, run by this Python). It loads
    each model a request names, in a model process of its own."""

    def __init__(self, log_file, *flags):
        self.port = free_port()
        self.log_file = log_file
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(log_file, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transformers.cli.transformers", "serve", *flags, "--host", "127.0.0.1",
                 "--port", str(self.port), "--device", "cpu"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def log(self) -> str:
        return Path(self.log_file).read_text(errors="replace")

    def wait_until_healthy(self):
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"transformers serve did not answer in {STARTUP_LIMIT_S} s:\n{self.log()[-3000:]}")

    def stop(self):
        """SIGTERM to the server's process group (the server and its model processes), SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # whatever of the group outlived the server
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module's tests, as the README starts it; killed whatever happens."""
    server = Server(tmp_path_factory.mktemp("serve-log") / "serve.log", "--trust-remote-code")
    try:
        server.wait_until_healthy()
        yield server
    finally:
        server.stop()
    assert server.process.poll() is not None


def ask(base_url, model, max_tokens, stream=False):
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="not-needed", timeout=STARTUP_LIMIT_S, max_retries=0)
    response = client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0,
                                         stream=stream)
    if stream:
        return "".join(chunk.choices[0].text for chunk in response if chunk.choices)
    return response.choices[0].text


@pytest.mark.slow
def test_serve_an_exported_checkpoint_and_ask_with_the_openai_client(server, checkpoint, tmp_path):
    exported = convert_to_gpt2(str(checkpoint), str(tmp_path / "tiny-gpt2"))
    expected = local_greedy(checkpoint, 8)  # the nanogpt2 checkpoint's own greedy continuation
    assert ask(server.base_url, str(exported), 8) == expected
    assert ask(server.base_url, str(exported), 8, stream=True) == expected


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=ServerRefusedTheModel,
                   reason=f"transformers 5.25 serve: {NOT_EXPORTED} (it loads getattr(transformers, "
                   "architectures[0]), even with --trust-remote-code); serve a to-gpt2 export instead")
def test_serve_a_nanogpt2_checkpoint_directly(server, checkpoint):
    from openai import InternalServerError

    try:
        answer = ask(server.base_url, str(checkpoint), 8)
    except InternalServerError:
        if NOT_EXPORTED not in (line.strip() for line in server.log().splitlines()):  # another failure is real
            pytest.fail(f"transformers serve failed otherwise:\n{server.log()[-3000:]}")
        raise ServerRefusedTheModel(NOT_EXPORTED) from None
    assert answer == local_greedy(checkpoint, 8)
