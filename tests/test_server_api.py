"""The server end to end: a real uvicorn process (python -m server) on a free loopback port, driven by the official
`openai` client, with smollm2-135m-instruct as target.

Two servers, each started once for this module:
- `spec`: API key on, the fp32 target as its own draft (f32 precision), so greedy speculation accepts (nearly)
  every token and the counters are easy to predict; reloads go to the int8 IR of the same model.
- `plain`: no API key, no draft, one running slot and one queue place, for auth-off and 429 tests.
Generations are short (max_tokens <= 32) to keep the module within a few minutes on 2 shared cores.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import run_at_once
from server import launch

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
KEY = "sk-fastdraft-test"
PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
CHAT = [{"role": "user", "content": "List three colours of the rainbow."}]


class SmolServer(launch.ServerProcess):
    """A server on smollm2 (fp32 target, already pulled), plus the clients the tests talk through."""

    def __init__(self, name: str, args: list[str], tmp: Path) -> None:
        super().__init__(["--target", MODEL, "--target-weight-format", "fp32", "--no-pull", *args],
                         tmp / f"{name}.log", ready_timeout_s=180)

    def client(self, api_key: str | None = KEY, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key or "none", max_retries=0, timeout=120, **kwargs)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples


def metric(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = {(k, str(v)) for k, v in labels.items()}
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and wanted <= set(sample_labels))


@pytest.fixture(scope="module")
def ir_dirs(smollm2_fp32) -> dict[str, Path]:
    from models.resolve import ir_dir_for, is_ir_dir

    int8 = ir_dir_for(MODEL, "int8")
    return {"fp32": Path(smollm2_fp32.ir_dir), "int8": int8 if is_ir_dir(int8) else Path(smollm2_fp32.ir_dir)}


@pytest.fixture(scope="module")
def spec(ir_dirs, tmp_path_factory):
    # the draft alone (no prompt lookup), a fixed k=5: the counters below are those of the target drafting for itself
    server = SmolServer("spec", ["--draft", str(ir_dirs["fp32"]), "--no-draft-with-lookup", "--no-adaptive", "--num-draft-tokens", "5",
                                 "--precision", "f32", "--api-key", KEY, "--max-running", "4"],
                        tmp_path_factory.mktemp("spec"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain(smollm2_fp32, tmp_path_factory):
    server = SmolServer("plain", ["--no-draft", "--max-running", "1", "--max-waiting", "1"],
                           tmp_path_factory.mktemp("plain"))
    yield server
    server.stop()


# --- completions and chat ---------------------------------------------------------------------------

def test_health_models_and_usage(spec):
    health = httpx.get(spec.url + "/health").json()
    assert health["status"] == "ok" and health["target"]["name"] == MODEL and health["draft"]["revision"]
    assert [m.id for m in spec.client().models.list().data] == [MODEL]
    result = spec.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0)
    assert result.choices[0].finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 5 and 0 < result.usage.completion_tokens <= 24
    block = result.usage.model_extra["speculative"]
    assert block["enabled"] and block["drafts"] > 0
    # the target drafting for itself (f32): every position accepted, up to rare near-ties
    assert block["acceptance_rate"] > 0.9 and block["mean_accepted_length"] > 3
    assert block["accepted_tokens"] <= block["draft_tokens"]
    assert len(block["acceptance_per_position"]) == 5


def _stream_text(stream, n: int = 1) -> tuple[list[str], list[list[str]], object]:
    texts, reasons, usage = [""] * n, [[] for _ in range(n)], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            piece = choice.text if hasattr(choice, "text") else (choice.delta.content or "")
            texts[choice.index] += piece
            if choice.finish_reason is not None:
                reasons[choice.index].append(choice.finish_reason)
    return texts, reasons, usage


def _stream_logprobs(stream) -> tuple[str, list[str], list[float | None], list[int]]:
    """A one-choice completions stream joined: text, and the logprobs' tokens, token_logprobs and text_offset."""
    text, tokens, values, offsets = "", [], [], []
    for chunk in stream:
        for c in chunk.choices:
            text += c.text
            if c.logprobs is not None:
                tokens += c.logprobs.tokens
                values += c.logprobs.token_logprobs
                offsets += c.logprobs.text_offset
    return text, tokens, values, offsets


def test_completion_stream_joins_to_non_streamed(spec):
    client = spec.client()
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32, temperature=0)
    texts, reasons, usage = _stream_text(client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=32, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert texts[0] == full.choices[0].text and texts[0]
    assert reasons[0] == [full.choices[0].finish_reason]  # exactly one finish_reason
    assert usage.completion_tokens == full.usage.completion_tokens


def test_chat_stream_joins_to_non_streamed(spec):
    client = spec.client()
    full = client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=32, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=32, temperature=0,
                                            stream=True)
    texts, reasons, _ = _stream_text(stream)
    assert full.choices[0].message.role == "assistant"
    assert texts[0] == full.choices[0].message.content and texts[0]
    assert reasons[0] == [full.choices[0].finish_reason]


def test_speculation_off_gives_the_same_greedy_text(spec):
    client = spec.client()
    on = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32, temperature=0)
    off = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32, temperature=0,
                                    extra_body={"speculative": {"enabled": False}})
    assert off.usage.model_extra["speculative"]["drafts"] == 0
    assert on.usage.model_extra["speculative"]["drafts"] > 0
    assert on.choices[0].text == off.choices[0].text


def test_seeded_sampling_gives_one_text_alone_and_under_load(spec):
    """A seed decides every token: five runs alone, five while three other requests run, speculation on or off."""
    client = spec.client()
    # a fixed k, so every run drafts (this server's draft is the target itself: the cost-driven policy
    # rightly drafts little with it)
    kwargs = dict(model=MODEL, messages=CHAT, max_completion_tokens=24, temperature=0.9, top_p=0.95, seed=123,
                  extra_body={"top_k": 40, "speculative": {"num_draft_tokens": 3, "adaptive": False}})

    def seeded():
        response = client.chat.completions.create(**kwargs)
        return response.choices[0].message.content, response.usage.model_extra["speculative"]["drafts"]

    def other(i):
        return lambda: client.completions.create(model=MODEL, prompt=f"Story number {i}:", max_tokens=60,
                                                 temperature=1.0, seed=i)
    alone = [seeded() for _ in range(5)]
    loaded = [run_at_once([seeded, other(1), other(2), other(3)])[0] for _ in range(5)]
    texts = {text for text, _ in alone + loaded}
    assert len(texts) == 1 and texts.pop(), (alone, loaded)
    assert all(drafts > 0 for _, drafts in alone + loaded), "speculation was on in every run"
    for speculative in ({"enabled": False}, {"adaptive": True}, {"num_draft_tokens": 6, "adaptive": False}):
        other_run = client.chat.completions.create(**{**kwargs, "extra_body": {"top_k": 40, "speculative": speculative}})
        assert other_run.choices[0].message.content == alone[0][0], f"the seed decides the text ({speculative})"


def test_stop_strings_are_honoured(spec):
    client = spec.client()
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32, temperature=0).choices[0].text
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip(), f"pick another prompt: {full!r}"
    expected = full[:full.index(stop)]
    result = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32, temperature=0, stop=[stop, "@@@@"])
    assert result.choices[0].text == expected and result.choices[0].finish_reason == "stop"
    texts, reasons, _ = _stream_text(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32,
                                                               temperature=0, stop=stop, stream=True))
    assert texts[0] == expected and reasons[0] == ["stop"]


def test_n_prompt_lists_and_echo(spec):
    client = spec.client()
    result = client.completions.create(model=MODEL, prompt=["Hello", "The sky is"], n=2, max_tokens=4,
                                       temperature=0.7, seed=7, echo=True)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert result.choices[0].text.startswith("Hello") and result.choices[3].text.startswith("The sky is")
    texts, reasons, _ = _stream_text(client.completions.create(model=MODEL, prompt=["Hello", "The sky is"], n=2,
                                                               max_tokens=4, temperature=0.7, seed=7, echo=True,
                                                               stream=True), n=4)
    assert texts == [c.text for c in result.choices]
    assert all(len(r) == 1 for r in reasons)


def test_the_choices_of_one_request_run_in_one_batch_and_each_equals_itself_alone(spec):
    # 3 prompts x n=2 on a server whose batch holds 4: four start at once, the other two as those end
    client, prompts = spec.client(), ["def add(a, b):", "The sky is", "Once upon a time"]
    common = dict(model=MODEL, max_tokens=16, temperature=0.8, extra_body={"speculative": {"enabled": False}})
    before = spec.metrics()
    together = client.completions.create(prompt=prompts, n=2, seed=11, **common)
    after = spec.metrics()
    steps = metric(after, "fastdraft:engine_batch_size_count") - metric(before, "fastdraft:engine_batch_size_count")
    alone_steps = (metric(after, "fastdraft:engine_batch_size_bucket", le="1.0")
                   - metric(before, "fastdraft:engine_batch_size_bucket", le="1.0"))
    assert steps - alone_steps >= 10, f"only {steps - alone_steps} of {steps} steps carried more than one choice"
    for index, choice in enumerate(together.choices):  # choice j of a prompt samples with seed + j
        prompt_index, j = divmod(index, 2)
        alone = client.completions.create(prompt=prompts[prompt_index], seed=11 + j, **common).choices[0]
        assert (choice.text, choice.finish_reason) == (alone.text, alone.finish_reason), index


def test_completion_logprobs(spec):
    client = spec.client()
    kwargs = dict(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0, logprobs=2)
    choice = client.completions.create(**kwargs).choices[0]
    lp = choice.logprobs
    assert choice.text and "".join(lp.tokens) == choice.text
    assert len(lp.token_logprobs) == len(lp.tokens) == len(lp.top_logprobs) == len(lp.text_offset)
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(len(top) == 2 and all(v <= 0 for v in top.values()) for top in lp.top_logprobs)
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):  # greedy: chosen == top-1
        best = max(top, key=top.get)
        assert best == token and top[best] == pytest.approx(value, abs=1e-6)
    text, tokens, values, offsets = _stream_logprobs(client.completions.create(**kwargs, stream=True))
    assert text == choice.text and tokens == lp.tokens and offsets == lp.text_offset
    assert values == pytest.approx(lp.token_logprobs, abs=1e-3)


def test_echo_with_logprobs_scores_the_prompt(spec):
    """What lm-eval-harness's loglikelihood sends: echo + logprobs, max_tokens 0 (score only) or 1."""
    client = spec.client()
    prompt = "The capital of France is"
    generated = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=1).choices[0]
    scored = client.completions.create(model=MODEL, prompt=prompt + generated.text, max_tokens=0, echo=True,
                                       logprobs=1, temperature=0).choices[0]
    lp = scored.logprobs
    assert scored.text == prompt + generated.text and scored.finish_reason == "length"
    assert "".join(lp.tokens) == scored.text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:]) and all(len(top) >= 1 for top in lp.top_logprobs[1:])
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    # the continuation scored as prompt has the logprobs its generation reported, and is greedy (top-1)
    tail = len(generated.logprobs.tokens)
    assert lp.tokens[-tail:] == generated.logprobs.tokens
    assert lp.token_logprobs[-tail:] == pytest.approx(generated.logprobs.token_logprobs, abs=1e-3)
    assert all(max(top, key=top.get) == token for top, token in zip(lp.top_logprobs[-tail:], lp.tokens[-tail:]))

    kwargs = dict(model=MODEL, prompt=prompt, max_tokens=3, echo=True, logprobs=2, temperature=0)
    whole = client.completions.create(**kwargs).choices[0]
    assert whole.text.startswith(prompt) and "".join(whole.logprobs.tokens) == whole.text
    text, tokens, _, offsets = _stream_logprobs(client.completions.create(**kwargs, stream=True))
    assert text == whole.text and tokens == whole.logprobs.tokens and offsets == whole.logprobs.text_offset
    alone = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=2).choices[0].logprobs
    for choice in client.completions.create(**{**kwargs, "temperature": 0.8, "seed": 1}, n=2).choices:
        count = len(alone.tokens)  # every choice echoes the same scored prompt (computed once)
        assert choice.logprobs.tokens[:count] == alone.tokens and choice.logprobs.token_logprobs[0] is None
        assert choice.logprobs.token_logprobs[1:count] == pytest.approx(alone.token_logprobs[1:], abs=1e-3)


def test_chat_logprobs(spec):
    client = spec.client()
    kwargs = dict(model=MODEL, messages=CHAT, max_completion_tokens=24, temperature=0, logprobs=True, top_logprobs=2)
    choice = client.chat.completions.create(**kwargs).choices[0]
    content = choice.logprobs.content
    assert choice.message.content and "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0 and t.bytes == list(t.token.encode()) and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-6)
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
    streamed, text = [], ""
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.logprobs is not None and c.logprobs.content:
                streamed += c.logprobs.content
    assert text == choice.message.content and [t.token for t in streamed] == [t.token for t in content]
    plain = client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=4, temperature=0,
                                           logprobs=True)
    assert all(t.top_logprobs == [] for t in plain.choices[0].logprobs.content)
    assert client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=4).choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=4, top_logprobs=2)
    assert "top_logprobs" in raised.value.body["message"] and raised.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=4, logprobs=True,
                                       top_logprobs=21)
    assert "top_logprobs" in raised.value.body["message"] and "20" in raised.value.body["message"]


# --- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=5), "temperature"),
    (dict(max_tokens=100000), "max_tokens"),
    (dict(top_p=0), "top_p"),
    (dict(n=0), "n"),
    (dict(presence_penalty=0.5), "presence_penalty"),
    (dict(logprobs=21), "logprobs"),
    (dict(max_tokens=-1), "max_tokens"),
    (dict(extra_body={"frobnicate": 1}), "frobnicate"),
    (dict(extra_body={"speculative": {"num_draft_tokens": 99}}), "speculative.num_draft_tokens"),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
])
def test_bad_parameters_are_400s_naming_the_field(spec, kwargs, field):
    with pytest.raises(openai.BadRequestError) as raised:
        spec.client().completions.create(model=MODEL, prompt="Hi", **{"max_tokens": 4, **kwargs})
    assert raised.value.status_code == 400
    error = raised.value.body
    assert field in error["message"] and set(error) >= {"message", "type", "param", "code"}


def test_errors_then_the_server_still_serves(spec):
    client = spec.client()
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt="word " * 9000, max_tokens=4)
    assert raised.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as raised:
        client.completions.create(model="gpt-4", prompt="Hi", max_tokens=4)
    assert raised.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[], max_completion_tokens=4)
    response = httpx.post(spec.url + "/v1/completions", content=b"{not json", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("request body is not valid JSON")
    big = httpx.post(spec.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": MODEL, "prompt": "x" * 2_000_000})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert httpx.get(spec.url + "/v1/nothing-here").json()["error"]["type"] == "not_found"
    assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices[0].finish_reason


def test_auth_on(spec):
    with pytest.raises(openai.AuthenticationError):
        spec.client(api_key="wrong").completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    assert httpx.post(spec.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi"}).status_code == 401
    assert httpx.post(spec.url + "/admin/reload").status_code == 401
    assert httpx.get(spec.url + "/health").status_code == 200  # probes and scrapers need no key
    assert httpx.get(spec.url + "/metrics").status_code == 200


def test_auth_off(plain):
    result = plain.client(api_key=None).completions.create(model=MODEL, prompt="Hi", max_tokens=2, temperature=0)
    assert result.usage.model_extra["speculative"]["enabled"] is False
    with pytest.raises(openai.BadRequestError) as raised:
        plain.client().completions.create(model=MODEL, prompt="Hi", max_tokens=2,
                                          extra_body={"speculative": {"enabled": True}})
    assert "speculative.enabled" in raised.value.body["message"]


# --- load, cancellation -----------------------------------------------------------------------------

def test_concurrent_requests_each_equal_their_output_alone(spec):
    async def main(prompts) -> list:
        client = openai.AsyncOpenAI(base_url=spec.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
        return await asyncio.gather(*(client.completions.create(model=MODEL, prompt=p, max_tokens=12 + 4 * i,
                                                                temperature=0)
                                      for i, p in enumerate(prompts)))

    prompts = [f"Write a Python function number {i} that" for i in range(6)]
    together = asyncio.run(main(prompts))  # six at once: four batched in each step, two queued behind them
    alone = [spec.client().completions.create(model=MODEL, prompt=p, max_tokens=12 + 4 * i, temperature=0)
             for i, p in enumerate(prompts)]
    assert [r.choices[0].text for r in together] == [r.choices[0].text for r in alone]
    assert all(r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0 for r in together)


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_disconnect_mid_stream_cancels_the_generation(spec):
    before = spec.metrics()
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2000, "temperature": 0, "stream": True,
            "speculative": {"enabled": False}}  # plain decoding: one token per step, so it would run a long time
    with httpx.stream("POST", spec.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: ") for line in received)
    assert _wait_for(lambda: metric(spec.metrics(), "fastdraft:requests_total", status="499") >
                     metric(before, "fastdraft:requests_total", status="499"))
    assert _wait_for(lambda: metric(spec.metrics(), "fastdraft:num_requests_running") == 0)
    # the engine itself stopped: its sequence left and its KV blocks went back
    assert _wait_for(lambda: metric(spec.metrics(), "fastdraft:engine_sequences") == 0)
    assert _wait_for(lambda: metric(spec.metrics(), "fastdraft:kv_blocks_used") == 0)
    after = spec.metrics()
    generated = metric(after, "fastdraft:generation_tokens_total") - metric(before, "fastdraft:generation_tokens_total")
    assert generated < 200, f"the engine kept generating after the client left ({generated} tokens)"


def test_queue_full_is_429_and_slots_free_up(plain):
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 300, "temperature": 0, "stream": True}
    streams, done = [], threading.Event()

    def hold() -> None:
        with httpx.stream("POST", plain.url + "/v1/completions", json=body, timeout=60) as response:
            streams.append(response.status_code)
            for _ in response.iter_lines():
                if done.is_set():
                    return

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(2)]
    try:
        threads[0].start()
        assert _wait_for(lambda: metric(plain.metrics(), "fastdraft:num_requests_running") == 1)
        threads[1].start()
        assert _wait_for(lambda: metric(plain.metrics(), "fastdraft:num_requests_waiting") == 1)
        with pytest.raises(openai.RateLimitError) as raised:
            plain.client(api_key=None).completions.create(model=MODEL, prompt="Hi", max_tokens=2)
        assert raised.value.body["code"] == "queue_full"
    finally:
        done.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=60)
    assert _wait_for(lambda: metric(plain.metrics(), "fastdraft:num_requests_running") == 0)
    assert plain.client().completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices[0].finish_reason


# --- hot reload -------------------------------------------------------------------------------------

def test_hot_reload_under_traffic_loses_no_request(spec, ir_dirs, tmp_path):
    headers = {"Authorization": f"Bearer {KEY}"}
    old = httpx.get(spec.url + "/health").json()["draft"]

    async def traffic() -> list:
        client = openai.AsyncOpenAI(base_url=spec.url + "/v1", api_key=KEY, max_retries=0, timeout=120)

        async def one(i: int):
            stream = await client.completions.create(model=MODEL, prompt=f"{PROMPT}# variant {i}\n", max_tokens=24,
                                                     temperature=0, stream=True, stream_options={"include_usage": True})
            reasons, usage = [], None
            async for chunk in stream:
                usage = chunk.usage or usage
                reasons += [c.finish_reason for c in chunk.choices if c.finish_reason]
            return reasons, usage

        async def reload():
            async with httpx.AsyncClient(timeout=120) as http:
                deadline = time.monotonic() + 60
                while True:  # reload once the requests are running, not before
                    running = await asyncio.to_thread(lambda: metric(spec.metrics(), "fastdraft:num_requests_running"))
                    assert running >= 1 or time.monotonic() < deadline, "the requests never started"
                    if running >= 1:
                        break
                    await asyncio.sleep(0.02)
                return await http.post(spec.url + "/admin/reload", headers=headers, json={"draft": str(ir_dirs["int8"])})

        return await asyncio.gather(reload(), *(one(i) for i in range(4)))

    reloaded, *results = asyncio.run(traffic())
    assert reloaded.status_code == 200, reloaded.text
    assert all(len(reasons) == 1 and usage.completion_tokens > 0 for reasons, usage in results)
    new = httpx.get(spec.url + "/health").json()["draft"]
    info = metric(spec.metrics(), "fastdraft:model_info", draft_revision=new["revision"])
    assert info == 1.0
    if ir_dirs["int8"] != ir_dirs["fp32"]:
        assert new["revision"] != old["revision"]

    # a draft that cannot load is refused with the reason; the current one keeps serving
    refused = httpx.post(spec.url + "/admin/reload", headers=headers, json={"draft": "/nonexistent/draft"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "draft_reload_failed"
    assert "still serving" in refused.json()["error"]["message"]
    assert httpx.get(spec.url + "/health").json()["draft"] == new
    # a draft whose vocabulary differs from the target's fails the vocabulary check: refused, naming the token
    refused = httpx.post(spec.url + "/admin/reload", headers=headers, json={"draft": str(_mismatched_draft(ir_dirs["int8"], tmp_path))})
    assert refused.status_code == 400 and "VocabMismatchError" in refused.json()["error"]["message"]
    assert httpx.get(spec.url + "/health").json()["draft"] == new
    result = spec.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert result.usage.model_extra["speculative"]["drafts"] > 0


def _mismatched_draft(ir_dir: Path, tmp_path: Path) -> Path:
    """The same IR with token ids 100 and 101 swapped in tokenizer.json: a draft from another vocabulary."""
    import json

    out = tmp_path / "mismatched-draft"
    out.mkdir()
    for item in ir_dir.iterdir():
        if item.is_file() and not item.name.startswith("."):
            (out / item.name).symlink_to(item)
    tokenizer = json.loads((ir_dir / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = (next(token for token, token_id in vocab.items() if token_id == i) for i in (100, 101))
    vocab[first], vocab[second] = 101, 100  # swapped ids: same strings, other numbering
    (out / "tokenizer.json").unlink()
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))
    return out


def test_sighup_reloads_the_draft(spec):
    before = metric(spec.metrics(), "fastdraft:draft_reloads_total", result="ok")
    os.kill(spec.proc.pid, signal.SIGHUP)
    assert _wait_for(lambda: metric(spec.metrics(), "fastdraft:draft_reloads_total", result="ok") == before + 1)
    assert httpx.get(spec.url + "/health").json()["status"] == "ok"


# --- metrics ----------------------------------------------------------------------------------------

def test_metrics_parse_and_move(spec):
    before = spec.metrics()
    result = spec.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0)
    after = spec.metrics()
    block = result.usage.model_extra["speculative"]

    def delta(name: str, **labels) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("fastdraft:requests_total", endpoint="completions", status="200") == 1
    assert delta("fastdraft:prompt_tokens_total") == result.usage.prompt_tokens
    assert delta("fastdraft:generation_tokens_total") == result.usage.completion_tokens
    assert delta("fastdraft:spec_decode_num_drafts_total") == block["drafts"]
    assert delta("fastdraft:spec_decode_num_draft_tokens_total") == block["draft_tokens"]
    assert delta("fastdraft:spec_decode_num_accepted_tokens_total") == block["accepted_tokens"]
    assert delta("fastdraft:spec_decode_num_accepted_tokens_per_pos_total", position=0) == block["accepted_per_position"][0]
    assert delta("fastdraft:time_to_first_token_seconds_count") == 1
    assert delta("fastdraft:e2e_request_latency_seconds_count", endpoint="completions") == 1
    assert delta("fastdraft:spec_decode_target_verify_seconds_count") > 0
    assert delta("fastdraft:spec_decode_draft_step_seconds_count") == block["drafts"]
    assert delta("fastdraft:request_queue_time_seconds_count") == 1
    assert metric(after, "fastdraft:model_info", target=MODEL, ready="true") == 1
    assert ("fastdraft:spec_decode_current_k", ()) in after
    ratios = [metric(after, "fastdraft:engine_call_cost_ratio", tokens=str(n)) for n in (2, 4, 8, 16, 32, 64)]
    assert 1.0 <= ratios[0] and ratios == sorted(ratios), ratios  # learnt, and never cheaper for more
    assert delta("fastdraft:requests_total", status="400") == 0
    # n choices count their prompt once on /metrics, as usage does
    before = spec.metrics()
    result = spec.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, n=2)
    after = spec.metrics()
    assert delta("fastdraft:prompt_tokens_total") == result.usage.prompt_tokens
