"""The live page at /dashboard end to end: a real server (python -m server, smollm2-135m-instruct fp32 target with
its int8 IR as draft, an API key on), real requests through the official `openai` client, and a real headless
browser (Debian's chromium) that loads the page; the numbers it renders are checked against the server's /metrics.

The draft is the int8 copy rather than the target itself: drafting for itself the target accepts every token, and
with acceptance 1.0 everywhere a page that divided by the drafted instead of the reached count would pass.

The browser is driven over the DevTools protocol on a pipe and runs on virtual time: its clock and timers move only
when the test grants time (and stand still while a fetch is pending), so the page scrapes exactly where the test
wants (once before a burst of requests, once after) and the rates it shows can be recomputed from the test's own
scrapes. The page's window is read from the page itself (data-value of #window-seconds).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import launch

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
KEY = "sk-fastdraft-dashboard"
NUM_DRAFT_TOKENS = 4
PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
CHROMIUM = shutil.which("chromium")
P = "fastdraft:"


# --- a headless chromium on the DevTools protocol ---------------------------------------------------

class Browser:
    """chromium --headless --remote-debugging-pipe: JSON messages ending in NUL, commands written to the child's
    fd 3, answers and events read from its fd 4 (the protocol without a websocket library)."""

    def __init__(self, profile_dir: Path) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def onto_fds_3_and_4() -> None:  # in the child, before exec: the pipe ends where chromium looks for them
            import fcntl
            staged = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_read, from_browser_write)]
            for target, fd in zip((3, 4), staged):
                os.dup2(fd, target)
                os.close(fd)

        self._log = open(profile_dir / "chromium.log", "w")
        # --no-sandbox: chromium's sandbox refuses to run as root, which test containers are
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=onto_fds_3_and_4, close_fds=False)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited ({self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def command(self, method: str, session: str | None = None, timeout_s: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self._read(deadline)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise RuntimeError(f"{method}: {answer['error']}")
            return answer["result"]

    def wait_for_event(self, method: str, session: str, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


class Page:
    """One tab on virtual time, paused until `advance` grants it some."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser = browser
        target = browser.command("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.command("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime.enable", "Log.enable"):
            self.command(domain)
        self.command("Emulation.setVirtualTimePolicy", policy="pause")
        self.command("Page.navigate", url=url)

    def command(self, method: str, **params) -> dict:
        return self.browser.command(method, self.session, **params)

    def advance(self, milliseconds: int) -> None:
        """Let the page's clock run `milliseconds` (not counting the time its fetches take), then stop it again."""
        self.command("Emulation.setVirtualTimePolicy", policy="pauseIfNetworkFetchesPending", budget=milliseconds)
        self.browser.wait_for_event("Emulation.virtualTimeBudgetExpired", self.session)

    def evaluate(self, expression: str):
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for_scrapes(self, count: int, timeout_s: float = 30) -> None:
        """Poll until the page has rendered `count` scrapes of /metrics."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if int(self.evaluate("document.body ? document.body.dataset.scrapes || 0 : 0")) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"the page did not render {count} scrapes in {timeout_s} s; errors: {self.errors()}")

    def readouts(self) -> dict[str, dict[str, str]]:
        """Every number on the page: element id -> its text and its unrounded data-value."""
        return self.evaluate("Object.fromEntries([...document.querySelectorAll('[data-value]')]"
                             ".map((e) => [e.id, {text: e.textContent, value: e.dataset.value}]))")

    def acceptance_positions(self) -> list[int]:
        return self.evaluate("[...document.querySelectorAll('#acceptance-rows tr[data-position]')]"
                             ".map((row) => Number(row.dataset.position))")

    def errors(self) -> list[str]:
        """Script exceptions, console errors and refused loads (a CSP violation, a missing file)."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(event["params"]["exceptionDetails"].get("exception", {}).get("description", "exception"))
            elif event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                entry = event["params"]["entry"]
                found.append(f"{entry['text']} {entry.get('url', '')}".strip())
        return found


# --- checking what the page shows --------------------------------------------------------------------

NUMBER = re.compile(r"(-?\d+(?:\.(\d+))?)(%|×)?")


def assert_shows(readouts: dict, element_id: str, expected: float | None) -> None:
    """The element shows `expected` (None: undefined, an em dash) to the precision it displays, within half its
    last digit, and holds the unrounded value in data-value."""
    shown = readouts[element_id]
    if expected is None:
        assert shown == {"text": "—", "value": ""}, f"#{element_id}: expected undefined, shows {shown}"
        return
    number = NUMBER.fullmatch(shown["text"])
    assert number, f"#{element_id} shows {shown['text']!r}, not a number"
    scale = 100.0 if number.group(3) == "%" else 1.0
    half_digit = 0.5 * 10.0 ** -len(number.group(2) or "") + 1e-9
    assert abs(float(number.group(1)) - scale * expected) <= half_digit, \
        f"#{element_id} shows {shown['text']}, /metrics gives {scale * expected}"
    assert float(shown["value"]) == pytest.approx(expected, rel=1e-9, abs=1e-12), f"#{element_id} data-value"


class Scrape:
    """The server's /metrics, read by the test."""

    def __init__(self, text: str) -> None:
        self.samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
                        for s in family.samples]

    def total(self, name: str, **labels) -> float:
        wanted = {k: str(v) for k, v in labels.items()}
        return sum(value for sample, have, value in self.samples
                   if sample == P + name and wanted.items() <= have.items())

    def labels(self, name: str) -> list[dict]:
        return [have for sample, have, _ in self.samples if sample == P + name]


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


# --- the server, its traffic, the browser ------------------------------------------------------------

class DashboardServer(launch.ServerProcess):
    def scrape(self) -> Scrape:
        return Scrape(httpx.get(self.url + "/metrics", timeout=10).text)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0, timeout=120)

    def idle_scrape(self, timeout_s: float = 60) -> Scrape:
        """/metrics once nothing runs and two reads in a row agree (the engine thread records a step just after
        the tokens it hands over)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            scrape = self.scrape()
            if last is not None and scrape.samples == last.samples and scrape.total("num_requests_running") == 0 \
                    and scrape.total("num_requests_waiting") == 0 and scrape.total("engine_sequences") == 0:
                return scrape
            last = scrape
            time.sleep(0.2)
        raise AssertionError(f"the server did not settle in {timeout_s} s")


@pytest.fixture(scope="module")
def server(smollm2_fp32, smollm2_int8, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("dashboard")
    process = DashboardServer(
        ["--target", MODEL, "--target-weight-format", "fp32", "--no-pull", "--draft", str(smollm2_int8.ir_dir),
         "--no-draft-with-lookup", "--no-adaptive", "--num-draft-tokens", str(NUM_DRAFT_TOKENS), "--precision", "f32",
         "--api-key", KEY, "--max-running", "4"], log_dir / "server.log", ready_timeout_s=180)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def traffic(server) -> None:
    """A plain request, speculative ones greedy and sampled (the sampled ones reject more), a refused one."""
    client = server.client()
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count to five."}],
                                   max_completion_tokens=16, temperature=0,
                                   extra_body={"speculative": {"enabled": False}})
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32, temperature=0)
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32, temperature=1.0, seed=7)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name three colours."}],
                                   max_completion_tokens=24, temperature=1.0, seed=11)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (bash scripts/install.sh test installs Debian's package)")
    running = Browser(tmp_path_factory.mktemp("chromium"))
    yield running
    running.close()


def open_dashboard(browser: Browser, server: DashboardServer) -> Page:
    """The page after its first scrape (no API key sent: the page and /metrics need none)."""
    page = Page(browser, server.url + "/dashboard")
    page.advance(500)  # load, the first scrape at once, the next one due 2 s after it
    page.wait_for_scrapes(1)
    return page


# --- tests -------------------------------------------------------------------------------------------

def test_page_shows_the_scrape(server, traffic, browser):
    scrape = server.idle_scrape()
    page = open_dashboard(browser, server)
    shown = page.readouts()
    assert page.errors() == []

    # acceptance at each position = accepted / reached, one row per position up to the last one reached
    reached = {int(labels["position"]): scrape.total("spec_decode_num_reached_tokens_per_pos_total", **labels)
               for labels in scrape.labels("spec_decode_num_reached_tokens_per_pos_total")}
    last = max(position for position, count in reached.items() if count > 0)
    assert last == NUM_DRAFT_TOKENS - 1
    assert page.acceptance_positions() == list(range(last + 1))
    distinguishes = False
    for position in range(last + 1):
        accepted = scrape.total("spec_decode_num_accepted_tokens_per_pos_total", position=position)
        drafted = scrape.total("spec_decode_num_draft_tokens_per_pos_total", position=position)
        assert_shows(shown, f"acceptance-pos-{position}", accepted / reached[position])
        assert_shows(shown, f"reached-pos-{position}", reached[position])
        assert_shows(shown, f"acceptance-window-pos-{position}", None)  # one scrape: no window yet
        distinguishes |= abs(accepted / reached[position] - accepted / drafted) > 0.001
    assert distinguishes, "every draft was accepted whole: accepted/drafted would pass for accepted/reached"
    assert_shows(shown, "acceptance-alpha", scrape.total("spec_decode_num_accepted_tokens_per_pos_total")
                 / scrape.total("spec_decode_num_reached_tokens_per_pos_total"))
    assert_shows(shown, "mean-accepted-length", 1 + scrape.total("spec_decode_num_accepted_tokens_total")
                 / scrape.total("spec_decode_num_drafts_total"))

    # tokens/s per request with and without speculation (1 / mean time per output token), and their ratio
    per_token = {mode: (scrape.total("time_per_output_token_seconds_sum", mode=mode),
                        scrape.total("time_per_output_token_seconds_count", mode=mode))
                 for mode in ("speculative", "plain")}
    for mode, (seconds, count) in per_token.items():
        assert count > 0, f"no {mode} request was timed"
        assert_shows(shown, f"stream-{mode}-tokens-per-second-total", count / seconds)
        assert_shows(shown, f"stream-{mode}-tokens-per-second", None)
    assert_shows(shown, "speedup", (per_token["plain"][0] / per_token["plain"][1])
                 / (per_token["speculative"][0] / per_token["speculative"][1]))

    # counts since start, the gauges, and no rate before a second scrape
    assert_shows(shown, "requests-total", scrape.total("requests_total"))
    assert_shows(shown, "requests-errors", scrape.total("requests_total", status=400))
    assert scrape.total("requests_total", status=400) == 1
    assert_shows(shown, "generation-tokens-total", scrape.total("generation_tokens_total"))
    # the last step drafted: k, or fewer where the request had fewer tokens left
    assert 1 <= scrape.total("spec_decode_current_k") <= NUM_DRAFT_TOKENS
    assert_shows(shown, "draft-k-current", scrape.total("spec_decode_current_k"))
    assert_shows(shown, "draft-k-mean", ratio(scrape.total("spec_decode_chosen_k_sum"),
                                              scrape.total("spec_decode_chosen_k_count")))
    for element_id, gauge in (("queue-running", "num_requests_running"), ("queue-waiting", "num_requests_waiting"),
                              ("engine-sequences", "engine_sequences"), ("kv-blocks-used", "kv_blocks_used")):
        assert_shows(shown, element_id, scrape.total(gauge))
    blocks = scrape.total("kv_blocks_used") + scrape.total("kv_blocks_free")
    assert blocks > 0
    assert_shows(shown, "kv-blocks-total", blocks)
    assert_shows(shown, "kv-blocks-percent", scrape.total("kv_blocks_used") / blocks)
    for element_id in ("window-seconds", "requests-per-second", "generation-tokens-per-second",
                       "prompt-tokens-per-second", "acceptance-alpha-window", "draft-k-mean-window"):
        assert_shows(shown, element_id, None)
    assert page.evaluate("document.getElementById('model-state').textContent") == "ready"
    draft = scrape.labels("model_info")[0]["draft"]
    assert page.evaluate("document.getElementById('model-draft').textContent") == draft


def test_rates_cover_the_requests_between_two_scrapes(server, traffic, browser):
    page = open_dashboard(browser, server)  # scrape 1, with the page's clock stopped after it
    before = server.idle_scrape()
    client = server.client()
    for max_tokens in (8, 12, 16):
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=max_tokens, temperature=1.0, seed=max_tokens)
    after = server.idle_scrape()
    page.advance(2000)  # the second scrape falls due
    page.wait_for_scrapes(2)
    shown = page.readouts()
    assert page.errors() == []

    window = float(shown["window-seconds"]["value"])
    assert 2.0 <= window < 2.5  # the next scrape is due 2 s after the last answer; the page measures what passed

    def grown(name: str, **labels) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert grown("requests_total") == 3
    assert_shows(shown, "requests-per-second", 3 / window)
    assert_shows(shown, "requests-total", after.total("requests_total"))  # the count moved
    assert_shows(shown, "generation-tokens-per-second", grown("generation_tokens_total") / window)
    assert_shows(shown, "prompt-tokens-per-second", grown("prompt_tokens_total") / window)
    assert_shows(shown, "stream-speculative-tokens-per-second",
                 grown("time_per_output_token_seconds_count", mode="speculative")
                 / grown("time_per_output_token_seconds_sum", mode="speculative"))
    assert_shows(shown, "stream-plain-tokens-per-second", None)  # no plain request in the window
    assert_shows(shown, "draft-k-mean-window", grown("spec_decode_chosen_k_sum") / grown("spec_decode_chosen_k_count"))
    for position in range(NUM_DRAFT_TOKENS):
        assert_shows(shown, f"acceptance-window-pos-{position}",
                     ratio(grown("spec_decode_num_accepted_tokens_per_pos_total", position=position),
                           grown("spec_decode_num_reached_tokens_per_pos_total", position=position)))
    assert_shows(shown, "acceptance-alpha-window", grown("spec_decode_num_accepted_tokens_per_pos_total")
                 / grown("spec_decode_num_reached_tokens_per_pos_total"))


def test_page_is_open_self_contained_and_out_of_the_schema(server):
    page = httpx.get(server.url + "/dashboard", timeout=10)  # no API key
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # the browser may load nothing but this server's own files: no CDN, works offline
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert "//" not in asset and not asset.startswith("/"), f"{asset}: not a file of this server's, relative"
        if asset != "metrics":
            assert httpx.get(f"{server.url}/{asset}", timeout=10).status_code == 200, asset
    assert httpx.get(server.url + "/v1/models", timeout=10).status_code == 401  # the API still needs the key
    paths = httpx.get(server.url + "/openapi.json", timeout=10).json()["paths"]
    assert not [path for path in paths if path.startswith("/dashboard")]
