"""Server parts that need no model: request validation, error shapes, the FIFO scheduler, metrics, settings/CLI."""

from __future__ import annotations

import argparse
import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drafting.detokenize import IncrementalDetokenizer
from drafting.logprobs import TokenLogprob
from drafting.stats import StepStats
from server import errors, protocol
from server.logprobs import LogprobAligner, chat_logprobs, completion_logprobs
from server.cli import add_arguments, settings_from_args
from server.metrics import Metrics
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.scheduler import Scheduler
from server.settings import Settings


# --- protocol ---------------------------------------------------------------------------------------

def test_completion_request_accepts_openai_shapes():
    request = protocol.parse(CompletionRequest, {
        "model": "m", "prompt": ["a", "b"], "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "seed": 3,
        "stop": "x", "stream": True, "stream_options": {"include_usage": True}, "n": 2, "echo": True, "user": "u",
        "top_k": 4, "speculative": {"enabled": True, "num_draft_tokens": 3, "adaptive": False},
        "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": None, "best_of": 2})
    assert request.stop == ["x"] and request.include_usage and request.speculative.num_draft_tokens == 3
    assert protocol.parse(CompletionRequest, {"model": "m", "prompt": [1, 2, 3]}).prompt == [1, 2, 3]


@pytest.mark.parametrize("body, param", [
    ({"presence_penalty": 0.1}, "presence_penalty"),
    ({"logit_bias": {"5": 1}}, "logit_bias"),
    ({"best_of": 3}, "best_of"),
    ({"suffix": "end"}, "suffix"),
    ({"whatever": 1}, "whatever"),
])
def test_unsupported_parameters_are_named(body, param):
    with pytest.raises(errors.APIError) as raised:
        protocol.parse(CompletionRequest, {"model": "m", "prompt": "p", **body})
    assert raised.value.status == 400 and raised.value.code == "unsupported_parameter"
    assert param in raised.value.message and raised.value.param == param


@pytest.mark.parametrize("body, param, words", [
    ({"temperature": 3}, "temperature", "less than or equal to 2"),
    ({"max_tokens": -1}, "max_tokens", "greater than or equal to 0"),
    ({"n": 9}, "n", "less than or equal to 8"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"speculative": {"num_draft_tokens": 17}}, "speculative.num_draft_tokens", "16"),
    ({"speculative": {"mode": "x"}}, "speculative.mode", "Extra inputs"),
    ({"prompt": []}, "prompt", "empty"),
    ({"logprobs": 21}, "logprobs", "less than or equal to 20"),
])
def test_invalid_values_name_field_and_limit(body, param, words):
    with pytest.raises(errors.APIError) as raised:
        protocol.parse(CompletionRequest, {"model": "m", "prompt": "p", **body})
    assert raised.value.status == 400 and raised.value.param == param
    assert words in raised.value.message and "got" in raised.value.message


def test_chat_request_and_stream_options_rules():
    request = protocol.parse(ChatCompletionRequest, {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 7})
    assert request.messages[0].text() == "ab" and request.token_limit == (7, "max_completion_tokens")
    with pytest.raises(errors.APIError, match="echo"):
        protocol.parse(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "a"}], "echo": True})
    with pytest.raises(errors.APIError, match="stream_options"):
        protocol.parse(CompletionRequest, {"model": "m", "prompt": "p", "stream_options": {"include_usage": True}})
    with pytest.raises(errors.APIError, match="messages"):
        protocol.parse(ChatCompletionRequest, {"model": "m", "messages": []})


def test_logprobs_request_rules():
    assert protocol.parse(CompletionRequest, {"model": "m", "prompt": "p", "logprobs": 2}).logprobs == 2
    scoring = protocol.parse(CompletionRequest, {"model": "m", "prompt": "p", "logprobs": 0, "echo": True, "max_tokens": 0})
    assert scoring.echo and scoring.logprobs == 0 and scoring.max_tokens == 0
    with pytest.raises(errors.APIError) as raised:
        protocol.parse(CompletionRequest, {"model": "m", "prompt": "p", "max_tokens": -1})
    assert raised.value.param == "max_tokens" and "0" in raised.value.message
    chat = {"model": "m", "messages": [{"role": "user", "content": "a"}]}
    assert protocol.parse(ChatCompletionRequest, {**chat, "logprobs": True, "top_logprobs": 3}).engine_logprobs == 3
    assert protocol.parse(ChatCompletionRequest, {**chat, "logprobs": True}).engine_logprobs == 0
    assert protocol.parse(ChatCompletionRequest, {**chat, "top_logprobs": 0}).engine_logprobs is None
    with pytest.raises(errors.APIError) as raised:
        protocol.parse(ChatCompletionRequest, {**chat, "top_logprobs": 2})
    assert raised.value.status == 400 and raised.value.param == "top_logprobs" and "logprobs" in raised.value.message
    with pytest.raises(errors.APIError) as raised:
        protocol.parse(ChatCompletionRequest, {**chat, "logprobs": True, "top_logprobs": 21})
    assert raised.value.param == "top_logprobs" and "20" in raised.value.message


class ByteTokenizer:
    """Token id = one UTF-8 byte, so a multi-byte character spans tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def _align(text: str, groups: list[int], stop: list[str] | None = None) -> tuple[str, list[list[str]], bool]:
    """Feed `text` as byte tokens in groups of the given sizes, like TextGeneration does; (released text, token
    strings per release, stopped)."""
    tokenizer = ByteTokenizer()
    detokenizer, aligner = IncrementalDetokenizer(tokenizer, stop), LogprobAligner(tokenizer)
    ids, released, start = list(text.encode()), [], 0
    for i, size in enumerate(groups):
        group, start = ids[start:start + size], start + size
        aligner.add([TokenLogprob(t, -0.5, [(t, -0.5), (t + 1, -1.5)]) for t in group])
        detokenizer.push(group)
        last = i == len(groups) - 1
        if last and not detokenizer.stopped:
            detokenizer.flush()
        released.append([t.text for t in aligner.release(detokenizer.text, final=last and not detokenizer.stopped)])
        if detokenizer.stopped:
            break
    return detokenizer.text, released, detokenizer.stopped


def test_logprob_tokens_join_to_the_released_text():
    text, released, _ = _align("héllo wörld", [3, 1, 5, 4])
    assert text == "héllo wörld" and "".join(sum(released, [])) == text
    assert sum(released, [])[1:3] == ["", "é"]  # the first byte of "é" produces no text; the second, all of it
    assert len(sum(released, [])) == len("héllo wörld".encode())
    # held back as a possible stop string ("o w" could start "o wx"), then released with the next group
    text, released, stopped = _align("hello world", [5, 1, 5], stop=["o wx"])
    assert not stopped and released[0] == ["h", "e", "l", "l"] and released[1] == [] and released[2][0] == "o"
    assert "".join(sum(released, [])) == text
    # a stop string cuts inside the group: tokens before it stay, the cut ones are gone
    text, released, stopped = _align("hello world", [4, 7], stop=["lo w"])
    assert stopped and text == "hel" and "".join(sum(released, [])) == "hel"


def test_logprob_shapes():
    tokenizer = ByteTokenizer()
    aligner = LogprobAligner(tokenizer)
    aligner.add([TokenLogprob(ord("a"), -0.25, [(ord("a"), -0.25), (ord("b"), -2.0)]), TokenLogprob(ord("c"), -1.0, [])])
    tokens = aligner.release("ac", final=True)
    assert completion_logprobs(tokens) == {"tokens": ["a", "c"], "token_logprobs": [-0.25, -1.0],
                                           "top_logprobs": [{"a": -0.25, "b": -2.0}, {}], "text_offset": [0, 1]}
    content = chat_logprobs(tokens)["content"]
    assert content[0] == {"token": "a", "logprob": -0.25, "bytes": [97], "top_logprobs": [
        {"token": "a", "logprob": -0.25, "bytes": [97]}, {"token": "b", "logprob": -2.0, "bytes": [98]}]}
    assert content[1]["top_logprobs"] == []


def test_error_body_is_openai_shaped():
    error = errors.context_length_exceeded(100, 50, 120, "max_tokens")
    assert error.status == 400
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}
    assert "120" in error.message and error.code == "context_length_exceeded"


# --- scheduler --------------------------------------------------------------------------------------

def test_scheduler_is_fifo_bounded_and_survives_cancelled_waiters():
    async def main() -> None:
        seen = []
        scheduler = Scheduler(max_running=1, max_waiting=3, on_change=lambda r, w: seen.append((r, w)))
        order: list[str] = []
        release = asyncio.Event()

        async def job(name: str) -> None:
            async with scheduler.slot():
                order.append(name)
                await release.wait()

        tasks = {}
        for name in "abcd":  # one at a time, so they queue in this order
            tasks[name] = asyncio.create_task(job(name))
            await asyncio.sleep(0)
        assert scheduler.running == 1 and scheduler.waiting == 3
        with pytest.raises(errors.APIError) as raised:
            async with scheduler.slot():
                pass
        assert raised.value.status == 429
        tasks["c"].cancel()  # a client that leaves while queued frees its place
        await asyncio.sleep(0)
        assert scheduler.waiting == 2
        release.set()
        await asyncio.gather(tasks["a"], tasks["b"], tasks["d"])
        with pytest.raises(asyncio.CancelledError):
            await tasks["c"]
        assert order == ["a", "b", "d"], f"slots went out in the order {order}, not in the order of arrival"
        assert scheduler.running == 0 and scheduler.waiting == 0 and seen[-1] == (0, 0)

    asyncio.run(main())


def test_scheduler_runs_up_to_the_limit_at_once():
    async def main() -> int:
        scheduler = Scheduler(max_running=3, max_waiting=10)
        peak = 0

        async def job() -> None:
            nonlocal peak
            async with scheduler.slot():
                peak = max(peak, scheduler.running)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(job() for _ in range(10)))
        return peak

    assert asyncio.run(main()) == 3


# --- metrics ----------------------------------------------------------------------------------------

def test_metrics_record_steps_with_vllm_compatible_names():
    metrics = Metrics()
    metrics.record_step(StepStats(num_drafted=4, num_accepted=2, num_emitted=3, draft_time_s=0.01, target_time_s=0.02))
    metrics.record_step(StepStats(num_drafted=0, num_accepted=0, num_emitted=1, draft_time_s=0.0, target_time_s=0.01))
    metrics.set_models("t", "r1", "d", "r2", "d", True)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}
    assert samples[("fastdraft:spec_decode_num_drafts_total", ())] == 1
    assert samples[("fastdraft:spec_decode_num_draft_tokens_total", ())] == 4
    assert samples[("fastdraft:spec_decode_num_accepted_tokens_total", ())] == 2
    assert samples[("fastdraft:spec_decode_num_emitted_tokens_total", ())] == 3
    assert samples[("fastdraft:spec_decode_num_accepted_tokens_per_pos_total", (("position", "1"),))] == 1
    assert samples[("fastdraft:spec_decode_num_accepted_tokens_per_pos_total", (("position", "2"),))] == 0
    assert samples[("fastdraft:spec_decode_num_draft_tokens_per_pos_total", (("position", "3"),))] == 1
    reached = [samples[("fastdraft:spec_decode_num_reached_tokens_per_pos_total", (("position", str(i)),))] for i in range(4)]
    assert reached == [1, 1, 1, 0]  # positions 0 and 1 accepted, 2 compared and rejected, 3 never compared
    assert samples[("fastdraft:target_calls_total", (("step", "plain"),))] == 1
    assert samples[("fastdraft:spec_decode_current_k", ())] == 0
    info = [labels for (name, labels), value in samples.items() if name == "fastdraft:model_info"]
    assert dict(info[0])["draft_revision"] == "r2"


# --- settings and CLI -------------------------------------------------------------------------------

def test_every_setting_is_a_flag_and_an_env_var(monkeypatch):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    monkeypatch.setenv("FASTDRAFT_NUM_DRAFT_TOKENS", "7")
    monkeypatch.setenv("FASTDRAFT_PORT", "9001")
    monkeypatch.setenv("FASTDRAFT_PROMPT_LOOKUP", "true")
    settings = settings_from_args(parser.parse_args(["--port", "9002", "--api-key", "k", "--no-draft",
                                                     "--no-prompt-lookup"]))
    assert settings.num_draft_tokens == 7  # env
    assert settings.port == 9002  # flag beats env
    assert settings.api_key == "k" and settings.proposer_mode == "none"
    flags = {action.dest for action in parser._actions}
    assert set(Settings.model_fields) <= flags
    with pytest.raises(ValueError):
        Settings(prompt_lookup=True, no_draft=True)


def test_serve_help_renders():
    # argparse %-formats every help string, so a description with a literal "%" broke `fastdraft serve --help`
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "FASTDRAFT_DRAFT_WITH_LOOKUP" in parser.format_help()


def test_dashboard_queries_use_metrics_the_server_exports():
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[1] / "dashboards" / "grafana-fastdraft.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    suffix = r"_(total|bucket|sum|count|info)$"
    used = {re.sub(suffix, "", name) for expr in exprs for name in re.findall(r"fastdraft:[a-z0-9_]+", expr)}
    exported = {re.sub(suffix, "", family.name) for family in Metrics().registry.collect()}
    assert used and used <= exported, used - exported


def test_while_loading_health_is_503_and_requests_get_503():
    from fastapi.testclient import TestClient

    from server.app import create_app

    client = TestClient(create_app(Settings(api_key="k")))  # no lifespan: the models never load
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "loading"
    assert client.get("/live").status_code == 200
    assert client.get("/metrics").status_code == 200
    response = client.post("/v1/completions", json={"model": "m", "prompt": "p"}, headers={"Authorization": "Bearer k"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    assert client.post("/v1/completions", json={}).status_code == 401
    assert "fastdraft:requests_total" in client.get("/metrics").text


def test_engine_failures_are_500s_that_leak_nothing_but_context_overflow_is_a_400(caplog):
    from drafting.errors import ContextLengthError
    from server.text_generation import _engine_error

    internal = _engine_error(ValueError("block table 7 out of range at /work/secret/path"))
    assert internal.status == 500 and "secret" not in internal.body()["error"]["message"]
    assert "block table 7" in caplog.text  # the traceback goes to the log
    overflow = _engine_error(ContextLengthError(30000, 4000, 32768))
    assert overflow.status == 400 and overflow.body()["error"]["code"] == "context_length_exceeded"
