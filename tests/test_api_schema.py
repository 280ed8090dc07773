"""The API as /openapi.json describes it: the schema itself (fast, no model), /docs without a network, and a
property-based fuzz of every route of a real server from its own schema (schemathesis, slow).

The fuzzed server: smollm2-135m-instruct (fp32), prompt lookup as proposer (speculation runs, no draft to
load), an API key, and --max-tokens-limit 4, which the schema publishes as the maximum of max_tokens, so every
generated request is cheap. Three bodies in four are given the served model's name and token-id prompts are
folded into its vocabulary (two things the schema cannot pin down), so most valid requests generate text.
Phases: the body examples, coverage (every schema rule broken once: the server must refuse each), and seeded
fuzzing of valid and invalid bodies. Checks: no 5xx, status codes, content types, headers and bodies (streamed
events too) as documented, invalid data refused, the API key enforced, every 4xx OpenAI's error object.
"""

from __future__ import annotations

import collections
import json
import re
import zlib

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth, negative_data_rejection,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

from server import launch, protocol, responses
from server.app import create_app
from server.settings import Settings

MODEL = "smollm2-135m-instruct"
KEY = "sk-fastdraft-fuzz"
MAX_TOKENS = 4
EXAMPLES_PER_ROUTE = 80  # fuzzing phase, per route; the examples and coverage phases add their own cases
MIN_CASES = 700


# --- the schema (no model) --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spec() -> dict:
    client = TestClient(create_app(Settings(api_key="k", max_tokens_limit=64)))  # no lifespan: nothing loads
    return client.get("/openapi.json").json()


def test_post_routes_publish_their_request_bodies(spec):
    bodies = {path: op["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
              for path, op in spec["paths"].items() if "post" in op}
    assert bodies == {"/v1/completions": "CompletionRequest", "/v1/chat/completions": "ChatCompletionRequest",
                      "/admin/reload": "ReloadRequest"}
    assert spec["paths"]["/v1/completions"]["post"]["requestBody"]["required"] is True
    assert spec["paths"]["/admin/reload"]["post"]["requestBody"]["required"] is False  # the body is optional


def test_components_hold_the_request_response_and_error_models(spec):
    schemas = spec["components"]["schemas"]
    assert {"CompletionRequest", "ChatCompletionRequest", "ChatMessage", "SpeculativeOptions", "StreamOptions",
            "CompletionResponse", "ChatCompletionResponse", "CompletionChunk", "ChatCompletionChunk", "Usage",
            "SpeculativeUsage", "ModelList", "Health", "ReloadRequest", "ReloadResponse", "ErrorResponse",
            "ErrorDetail"} <= set(schemas)
    assert set(schemas["ErrorDetail"]["required"]) == {"message", "type", "param", "code"}
    assert "HTTPValidationError" not in schemas  # FastAPI validates nothing: no 422 anywhere
    assert set(schemas["SpeculativeUsage"]["properties"]) >= {"drafts", "acceptance_rate", "mean_accepted_length"}
    assert schemas["Usage"]["properties"]["speculative"]["anyOf"][0]["$ref"].endswith("/SpeculativeUsage")


def test_fields_carry_type_range_and_default(spec):
    completion = spec["components"]["schemas"]["CompletionRequest"]
    fields = completion["properties"]
    assert set(completion["required"]) == {"model", "prompt"}
    assert completion["additionalProperties"] is False  # an unknown field is a 400
    assert fields["n"] == {**fields["n"], "type": "integer", "minimum": 1, "maximum": protocol.MAX_N, "default": 1}
    assert fields["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0.0, "maximum": 2.0}
    assert fields["max_tokens"]["anyOf"][0]["maximum"] == 64  # this server's --max-tokens-limit
    assert fields["top_k"]["anyOf"][0] == {"type": "integer", "minimum": 0}
    assert fields["stop"]["anyOf"][1]["maxItems"] == protocol.MAX_STOP
    assert fields["presence_penalty"]["enum"] == [None, 0]  # accepted at its neutral value only
    assert fields["speculative"]["anyOf"][0]["$ref"].endswith("/SpeculativeOptions")
    draft_tokens = spec["components"]["schemas"]["SpeculativeOptions"]["properties"]["num_draft_tokens"]
    assert draft_tokens["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 16}
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert chat["messages"]["minItems"] == 1 and chat["max_completion_tokens"]["anyOf"][0]["maximum"] == 64


def test_body_examples_are_requests_this_server_accepts(spec):
    for path, model in (("/v1/completions", protocol.CompletionRequest),
                        ("/v1/chat/completions", protocol.ChatCompletionRequest)):
        example = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
        assert example["model"] == Settings().target  # the served model's id (before loading: --target)
        protocol.parse(model, example)


def test_errors_are_described_with_the_openai_shape(spec):
    expected = {"/v1/completions": {400, 401, 404, 413, 429, 500, 503},
                "/v1/chat/completions": {400, 401, 404, 413, 429, 500, 503},
                "/v1/models": {401}, "/admin/reload": {400, 401, 409, 413, 500, 503}}
    for path, statuses in expected.items():
        (op,) = spec["paths"][path].values()
        errors = {int(code) for code in op["responses"] if code != "200"}
        assert errors == statuses, path
        for code in statuses:
            schema = op["responses"][str(code)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, code)
        assert op["security"] == [{"bearer": []}]
    assert spec["components"]["securitySchemes"]["bearer"] == {**spec["components"]["securitySchemes"]["bearer"],
                                                              "type": "http", "scheme": "bearer"}
    assert "security" not in spec["paths"]["/health"]["get"] and "security" not in spec["paths"]["/metrics"]["get"]


def test_without_an_api_key_no_route_asks_for_one():
    spec = TestClient(create_app(Settings())).get("/openapi.json").json()
    assert "securitySchemes" not in spec["components"]
    assert all("401" not in op["responses"] and "security" not in op
               for path in spec["paths"].values() for op in path.values())


def test_docs_pages_need_no_network():
    client = TestClient(create_app(Settings()))
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert any(a.endswith(".js") for a in assets) and not [a for a in assets if "//" in a], (page, assets)
        assert all(client.get(asset).status_code == 200 for asset in assets), assets  # served by this app
    assert '"validatorUrl": null' in client.get("/docs").text  # no call to the online validator either


# --- the fuzz (a real server) -----------------------------------------------------------------------

FUZZ_ARGS = ["--target", MODEL, "--target-weight-format", "fp32", "--no-pull", "--prompt-lookup", "--api-key", KEY,
             "--max-tokens-limit", str(MAX_TOKENS), "--max-running", "2"]
# The schema the fuzz reads: the same app's, built here at import (schemathesis makes its tests at collection,
# before a server runs); test_the_fuzz_ran... checks that the running server publishes exactly this one.
FUZZ_SPEC = TestClient(create_app(Settings(target=MODEL, prompt_lookup=True, api_key=KEY,
                                           max_tokens_limit=MAX_TOKENS))).get("/openapi.json").json()
schema = schemathesis.openapi.from_dict(FUZZ_SPEC, config=schemathesis.Config.from_dict({
    "seed": 20261201,  # the same cases on every run
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_ROUTE, "database": "none", "no-shrink": True},
    "phases": {"coverage": {"generation": {"mode": "negative"}}, "stateful": {"enabled": False}},
    "max-stream-events": 1000,  # read whole streams (n=8 choices of 4 tokens: under 50 events)
}))


@pytest.fixture(scope="module")
def fuzz_server(smollm2_fp32, tmp_path_factory):
    server = launch.ServerProcess(FUZZ_ARGS, tmp_path_factory.mktemp("fuzz") / "fuzz.log", ready_timeout_s=180)
    yield server
    server.stop()


CASES: collections.Counter = collections.Counter()  # cases sent, per route
STATUSES: collections.Counter = collections.Counter()


def error_object(ctx, response, case) -> None:
    """Every 4xx is OpenAI's error object (server/errors.py), never FastAPI's 422 detail list."""
    if 400 <= response.status_code < 500:
        responses.ErrorResponse.model_validate(response.json())


def stream_ends_cleanly(ctx, response, case) -> None:
    """A stream is chunks, no server_error event (a 500 after the headers went out), and `data: [DONE]` last."""
    content_type = response.headers.get("content-type", [""])[0]
    if response.stream_cut_short or response.status_code != 200 or not content_type.startswith("text/event-stream"):
        return
    # SSE ends lines at CR, LF or CRLF only; str.splitlines() also splits at U+2028, U+0085 and others, which a
    # generated token may hold raw inside a JSON string
    lines = re.split(r"\r\n|\r|\n", response.content.decode())
    events = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-3:]
    for event in events[:-1]:
        body = json.loads(event)
        assert body.get("error", {}).get("type") != "server_error", body


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, ignored_auth, error_object, stream_ends_cleanly]


def _into_vocabulary(prompt):
    """Token ids folded below smollm2's vocabulary size (49152), which the schema cannot know; only in prompts the
    schema allows (ints >= 0), so a case meant to be refused stays refused."""
    ids = prompt if isinstance(prompt, list) and all(isinstance(p, list) for p in prompt) else [prompt]
    if all(isinstance(p, list) and all(type(t) is int and t >= 0 for t in p) for p in ids):
        folded = [[t % 49152 for t in p] for p in ids]
        return folded if ids is prompt else folded[0]
    return prompt


@pytest.mark.slow
@schema.parametrize()
def test_fuzz_every_route_from_its_schema(case, fuzz_server):
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and isinstance(body.get("model"), str) and zlib.crc32(repr(body).encode()) % 4:
        body["model"] = MODEL  # three bodies in four: the served model; the fourth: (most likely) model_not_found
    if body is not None and "prompt" in body:
        body["prompt"] = _into_vocabulary(body["prompt"])
    transport = {"base_url": fuzz_server.url, "headers": {"Authorization": f"Bearer {KEY}"}, "timeout": 120}
    response = case.call(**transport)
    CASES[case.operation.label] += 1
    STATUSES[response.status_code] += 1
    case.validate_response(response, checks=CHECKS, headers=transport["headers"], transport_kwargs=transport)


@pytest.mark.slow
def test_the_fuzz_ran_and_the_server_still_serves(fuzz_server, capsys, record_property):
    total = sum(CASES.values())
    record_property("schemathesis_cases", total)
    with capsys.disabled():
        print(f"\nschemathesis: {total} cases: {dict(CASES)}; statuses: {dict(sorted(STATUSES.items()))}")
    assert total >= MIN_CASES, f"only {total} cases ran (run the whole module: the fuzz test feeds this count)"
    assert len(CASES) == 7, CASES  # every route
    assert STATUSES[200] > 80 and STATUSES[400] > 300  # text was generated, and bad requests were refused
    assert httpx.get(fuzz_server.url + "/openapi.json", timeout=10).json() == FUZZ_SPEC
    health = httpx.get(fuzz_server.url + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    completion = httpx.post(fuzz_server.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                            json={"model": MODEL, "prompt": "Hello", "max_tokens": 2}, timeout=60)
    assert completion.status_code == 200 and completion.json()["choices"][0]["finish_reason"]
