"""One knob, one name, one default: every command spells a knob as `fastdraft serve` does (server/settings.py:
flag --<field>, env var FASTDRAFT_<FIELD>) and starts from the same default; an old spelling still parses,
into the new flag's destination, with one warning naming that flag; each Prometheus label has one meaning.

The parsers are the real ones, read the way each command reads them (fastdraft's subcommands through
fastdraft.cli.parse_args, serve through its Settings, the training modules and scripts/load_test.py through
their build_parser). Two runs are real too: a server on smollm2 labelling its metrics, and `fastdraft generate`
given the old draft-plus-lookup spelling.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"

# concept -> (flag, default): the server's name and default for each knob the commands share
KNOBS = {
    "draft length k when it is fixed": ("--num-draft-tokens", 3),
    "draft length chosen per step": ("--adaptive", True),
    "prompt lookup instead of a draft model": ("--prompt-lookup", False),
    "the draft model plus prompt lookup": ("--draft-with-lookup", True),
    "longest copied proposal": ("--copy-tokens", 8),
    "weight format of the target IR": ("--target-weight-format", "int8"),
    "weight format of the draft IR": ("--draft-weight-format", "int8"),
    "OpenVINO precision hint": ("--precision", None),
    "openvino-genai's draft length, for comparisons": ("--genai-num-draft-tokens", 3),
    "weight format of a model pulled alone": ("--weight-format", "int8"),
}
SWITCHES = {"--adaptive", "--draft-with-lookup"}  # each also has its --no-<name>
SERVE = ["draft length k when it is fixed", "draft length chosen per step", "prompt lookup instead of a draft model",
         "the draft model plus prompt lookup", "longest copied proposal", "weight format of the target IR",
         "weight format of the draft IR", "OpenVINO precision hint"]

# command -> (minimal command line, the knobs it takes); every knob flag a command has must be listed here
COMMANDS = {
    "fastdraft serve": ([], SERVE),
    "fastdraft generate": (["--target", "t", "a prompt"], SERVE),
    "fastdraft bench": (["--target", "t", "--prompts", "p.jsonl"],
                        SERVE + ["openvino-genai's draft length, for comparisons"]),
    "fastdraft models pull": (["m"], ["weight format of a model pulled alone"]),
    "python -m training.align": (["--target", "t", "--draft", "d", "--out", "o"],
                                 ["draft length k when it is fixed", "weight format of the target IR",
                                  "weight format of the draft IR", "OpenVINO precision hint"]),
    "python -m training.evaluate": (["--target", "t", "--draft", "d", "--prompts", "p", "--out", "o"],
                                    ["draft length k when it is fixed", "weight format of the target IR",
                                     "weight format of the draft IR", "OpenVINO precision hint"]),
    "python -m training.generate": (["--target", "t", "--prompts", "humaneval", "--out", "o"],
                                    ["draft length k when it is fixed", "draft length chosen per step",
                                     "weight format of the target IR", "weight format of the draft IR"]),
    "python -m training.agreement": (["--draft", "d"], []),
    "python -m training.pretrain": (["--corpus", "c", "--out", "o"], []),
    "python -m training.build": (["--out", "o"], ["OpenVINO precision hint"]),
    "scripts/load_test.py": ([], ["prompt lookup instead of a draft model", "weight format of the target IR",
                                  "weight format of the draft IR", "OpenVINO precision hint",
                                  "openvino-genai's draft length, for comparisons"]),
}

# (command, an old spelling, the new flags it must set and to what, the flag its warning names)
DEPRECATED = [
    ("fastdraft generate", ["--weight-format", "fp32"],
     {"--target-weight-format": "fp32", "--draft-weight-format": "fp32"}, "--target-weight-format"),
    ("fastdraft generate", ["--draft", "d", "--prompt-lookup"],
     {"--prompt-lookup": False, "--draft-with-lookup": True}, "--draft-with-lookup"),
    ("fastdraft generate", ["--num-draft-tokens", "5"], {"--num-draft-tokens": 5, "--adaptive": False}, "--no-adaptive"),
    ("fastdraft bench", ["--ks", "3,5,7"], {"--num-draft-tokens": [3, 5, 7]}, "--num-draft-tokens"),
    ("fastdraft bench", ["--genai-ks", "5"], {"--genai-num-draft-tokens": [5]}, "--genai-num-draft-tokens"),
    ("fastdraft bench", ["--with-lookup"], {"--compare-lookup": True}, "--compare-lookup"),
    ("fastdraft bench", ["--weight-format", "fp16"],
     {"--target-weight-format": "fp16", "--draft-weight-format": "fp16"}, "--draft-weight-format"),
    ("fastdraft bench", ["--draft", "d", "--prompt-lookup"],
     {"--prompt-lookup": False, "--draft-with-lookup": True}, "--draft-with-lookup"),
    ("python -m training.align", ["--target-format", "fp32"], {"--target-weight-format": "fp32"}, "--target-weight-format"),
    ("python -m training.align", ["--export-format", "fp16"], {"--draft-weight-format": "fp16"}, "--draft-weight-format"),
    ("python -m training.evaluate", ["--target-format", "fp32"], {"--target-weight-format": "fp32"},
     "--target-weight-format"),
    ("python -m training.evaluate", ["--draft-format", "fp16"], {"--draft-weight-format": "fp16"}, "--draft-weight-format"),
    ("python -m training.generate", ["--target-format", "fp32"], {"--target-weight-format": "fp32"},
     "--target-weight-format"),
    ("scripts/load_test.py", ["--genai-k", "5"], {"--genai-num-draft-tokens": 5}, "--genai-num-draft-tokens"),
]

# label -> the metrics that carry it; one meaning each (server/metrics.py says which)
LABELS = {
    "step": {"fastdraft:target_calls", "fastdraft:spec_decode_target_verify_seconds"},  # what one step did
    "speculation": {"fastdraft:time_to_first_token_seconds"},  # whether the request was admitted with it
    "mode": {"fastdraft:time_per_output_token_seconds"},  # how the request ran: drafted at least once or not
}


@pytest.fixture(autouse=True)
def no_server_env(monkeypatch):
    """The defaults under test, not this shell's FASTDRAFT_* settings."""
    import os

    for name in [n for n in os.environ if n.startswith("FASTDRAFT_") and n != "FASTDRAFT_HOME"]:
        monkeypatch.delenv(name)


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def _load_test_module():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "scripts" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser that owns the command's flags."""
    if command.startswith("fastdraft "):
        from fastdraft.cli import build_parser

        return _subparser(build_parser(), *command.split()[1:])
    if command == "scripts/load_test.py":
        return _load_test_module().build_parser()
    return importlib.import_module(command.split()[-1]).build_parser()


def read_command_line(command: str, argv: list[str]):
    """What the command reads from this command line: its namespace (serve: its Settings)."""
    if command.startswith("fastdraft "):
        from fastdraft.cli import parse_args

        args = parse_args([*command.split()[1:], *argv])
        if command == "fastdraft serve":
            from server.cli import settings_from_args

            return settings_from_args(args)
        return args
    return command_parser(command).parse_args(argv)


def flag_action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def one_value(value):
    """bench takes a list of draft lengths: a default of one k is that k."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


@pytest.mark.parametrize("command", COMMANDS)
def test_each_knob_has_the_servers_name_and_default(command, capsys):
    minimal, knobs = COMMANDS[command]
    parser = command_parser(command)
    read = read_command_line(command, minimal)
    for concept in knobs:
        flag, default = KNOBS[concept]
        action = flag_action(parser, flag)
        assert action is not None, f"{command}: no {flag} ({concept})"
        if flag in SWITCHES:
            assert "--no-" + flag[2:] in action.option_strings, f"{command}: {flag} has no --no-{flag[2:]}"
        assert one_value(getattr(read, action.dest)) == default, f"{command}: {flag} defaults to " \
                                                                f"{getattr(read, action.dest)!r}, the server's is {default!r}"
    assert "warning" not in capsys.readouterr().err, f"{command}: warned on current spellings"


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_has_a_knob_the_table_does_not_check(command):
    """A knob flag on a command must be in that command's row (so its default is checked above), and every old
    spelling it still accepts is a deprecated alias, not a flag of its own."""
    from fastdraft.deprecated_flags import DeprecatedAlias

    _, knobs = COMMANDS[command]
    parser = command_parser(command)
    listed = {KNOBS[concept][0] for concept in knobs}
    for action in parser._actions:
        if isinstance(action, DeprecatedAlias):
            continue
        for flag, _ in KNOBS.values():
            if flag in action.option_strings:
                assert flag in listed, f"{command} has {flag}: add it to its row in COMMANDS"
        old = set(action.option_strings) & {old for _, argv, _, _ in DEPRECATED for old in argv if old.startswith("--")}
        old -= listed | {"--draft", "--prompt-lookup", "--num-draft-tokens"}  # current flags, old only in combinations
        assert not old, f"{command}: {sorted(old)} is a flag of its own, not a deprecated alias"


@pytest.mark.parametrize("command,old,expected,named", DEPRECATED, ids=[f"{c}: {' '.join(o)}" for c, o, _, _ in DEPRECATED])
def test_an_old_spelling_parses_into_the_new_flag_with_one_warning(command, old, expected, named, capsys):
    minimal, _ = COMMANDS[command]
    parser = command_parser(command)
    read = read_command_line(command, [*minimal, *old])
    for flag, value in expected.items():
        assert getattr(read, flag_action(parser, flag).dest) == value, f"{command} {' '.join(old)}: {flag}"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1, warnings
    assert old[0] in warnings[0] and named in warnings[0], warnings[0]


def test_a_bad_draft_length_names_the_flag_and_the_limit(capsys):
    from fastdraft.cli import parse_args

    for argv in (["generate", "--target", "t", "--no-adaptive", "--num-draft-tokens", "17", "p"],
                 ["bench", "--target", "t", "--prompts", "p", "--num-draft-tokens", "3,0"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
        error = capsys.readouterr().err
        assert "--num-draft-tokens" in error and "between 1 and 16" in error, error


# --- metric labels ----------------------------------------------------------------------------------

def _labels_by_metric() -> dict[str, set[str]]:
    """Each metric's declared label names (a labelled metric has no sample before its first use)."""
    from prometheus_client.metrics import MetricWrapperBase

    from server.metrics import Metrics

    return {metric._name: set(metric._labelnames) for metric in vars(Metrics()).values()
            if isinstance(metric, MetricWrapperBase)}


def test_each_metric_label_has_one_meaning():
    carried = _labels_by_metric()
    for label, metrics in LABELS.items():
        assert {name for name, names in carried.items() if label in names} == metrics, label


def test_grafana_queries_select_labels_their_metrics_carry():
    carried = _labels_by_metric()
    dashboard = json.loads((ROOT / "dashboards" / "grafana-fastdraft.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    suffix = r"_(total|bucket|sum|count|info)$"
    checked = 0
    for expr in exprs:
        uses = [(name, re.findall(r"(\w+)=", selector)) for name, selector in re.findall(r"(fastdraft:\w+)\{([^}]*)\}", expr)]
        uses += [(name, by.replace(" ", "").split(",")) for by, name in re.findall(r"by \(([^)]*)\) \(rate\((fastdraft:\w+)", expr)]
        for name, labels in uses:
            metric = re.sub(suffix, "", name)
            missing = set(labels) - {"le"} - carried[metric]
            assert not missing, f"{expr}: {metric} has no label {sorted(missing)}"
            checked += 1
    assert checked


@pytest.mark.slow
def test_a_server_labels_its_metrics_by_their_meanings(smollm2_fp32, tmp_path):
    """The target as its own draft at a fixed k: a speculative request drafts every step, a request with
    speculation off drafts none; each label says its own thing about them."""
    import httpx
    import openai
    from prometheus_client.parser import text_string_to_metric_families

    from server.launch import ServerProcess

    def scrape() -> dict:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def grew(before: dict, after: dict, name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    with ServerProcess(["--target", MODEL, "--target-weight-format", "fp32", "--no-pull", "--draft",
                        str(smollm2_fp32.ir_dir), "--no-draft-with-lookup", "--no-adaptive", "--num-draft-tokens", "3",
                        "--precision", "f32"], tmp_path / "server.log", ready_timeout_s=180) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
        for speculative, speculation, mode in ((None, "enabled", "speculative"), ({"enabled": False}, "disabled", "plain")):
            before = scrape()
            client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=8, temperature=0,
                                      extra_body={"speculative": speculative} if speculative else None)
            after = scrape()
            assert grew(before, after, "fastdraft:time_to_first_token_seconds_count", speculation=speculation) == 1
            assert grew(before, after, "fastdraft:time_per_output_token_seconds_count", mode=mode) == 1
            assert grew(before, after, "fastdraft:target_calls_total", step=mode) > 0
            other = "plain" if mode == "speculative" else "speculative"
            assert grew(before, after, "fastdraft:target_calls_total", step=other) == 0


@pytest.mark.slow
def test_generate_still_runs_the_draft_plus_lookup_under_its_old_spelling(smollm2_fp32, capsys):
    from fastdraft.cli import main

    code = main(["generate", "--target", MODEL, "--weight-format", "fp32", "--draft", MODEL, "--prompt-lookup",
                 "--precision", "f32", "--max-tokens", "8", "def add(a, b):"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert len([line for line in err.splitlines() if "warning" in line]) == 2, err  # --weight-format, --prompt-lookup
    assert f"proposer {MODEL}+prompt-lookup;" in err, err
