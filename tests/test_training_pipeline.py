"""The draft factory end to end on the tiny preset, plus its bad-input and resume guarantees.

Fixtures: a byte-level BPE tokenizer trained on a small source folder, a random 2-layer Qwen2 target over
it (exported to an fp32 IR once per session), and a corpus built from the same folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import align, corpus, evaluate, fixtures, generate, pretrain, trainer
from training.draft_folder import load_draft

REPO = Path(__file__).resolve().parents[1]


def build_world(root: Path) -> Path:
    """The tiny factory's inputs under `root`: sources, tokenizer, random target (HF and fp32 IR), corpus."""
    sources = fixtures.write_sources(root)
    fixtures.make_tokenizer(root / "tokenizer")
    fixtures.make_target(root / "target-hf", root / "tokenizer")
    from models.export import export_ir

    export_ir(root / "target-hf", root / "target-ir", weight_format="fp32")
    corpus.build(sources, root / "tokenizer", root / "corpus", root / "cache")
    return root


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("factory")
    patch = pytest.MonkeyPatch()
    patch.setenv("FASTDRAFT_HOME", str(root / "home"))
    yield build_world(root)
    patch.undo()


def pretrain_args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["--corpus", str(world / "corpus"), "--stage", "code-nl", "--preset", "tiny", "--draft-vocab-size", "200",
            "--target-hf", str(world / "target-hf"), "--batch-size", "4", "--seq-len", "32", "--threads", "1",
            "--out", str(out), *extra]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    model, _ = load_draft(folder)
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_corpus_is_deterministic_and_deduplicated(world, tmp_path):
    again = corpus.build(world / "sources.json", world / "tokenizer", tmp_path / "corpus", tmp_path / "cache")
    first = json.loads((world / "corpus" / "manifest.json").read_text())
    for a, b in zip(first["sources"], again["sources"]):
        assert a["sha256"] == b["sha256"] and a["tokens"] == b["tokens"] > 0
    prose = next(s for s in again["sources"] if s["name"] == "fixture-prose")
    assert prose["duplicates"] == 1  # duplicate.txt is a copy of doc00.txt
    assert set(again["stages"]) == {"nl", "code-nl"}
    assert again["tokenizer"]["separator"] == "<|endoftext|>"


def test_end_to_end_pipeline(world, tmp_path):
    # pretrain a few steps (reduced 200-token output layer, SVD-initialized embeddings)
    assert pretrain.main(pretrain_args(world, tmp_path / "pt", "--steps", "3", "--embed-init", "svd")) == 0
    draft_hf = tmp_path / "pt" / "hf"
    assert (draft_hf / "draft_vocab_map.json").exists()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "pt" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    # the target generates alignment data; some prompts are held out
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"id": "chat-1", "task": "chat",
                                "messages": [{"role": "user", "content": "Tell me about the river."}]}) + "\n")
    kd = tmp_path / "kd"
    assert generate.main(["--target", str(world / "target-ir"), "--prompts", "humaneval", "--prompts", f"file:{chat}",
                          "--out", str(kd), "--limit", "4", "--max-new-tokens", "12", "--batch-size", "2"]) == 0
    rows = generate.read_jsonl(kd / "generations.jsonl")
    held_out = {r["id"] for r in generate.read_jsonl(kd / "prompts-eval.jsonl")}
    assert len(rows) == 4 and held_out and not held_out & {r["id"] for r in rows}
    assert all(r["target_revision"] and r["sampling"]["max_new_tokens"] == 12 for r in rows)
    # resuming generation does nothing more
    assert generate.main(["--target", str(world / "target-ir"), "--prompts", "humaneval", "--prompts", f"file:{chat}",
                          "--out", str(kd), "--limit", "4", "--max-new-tokens", "12"]) == 0
    assert len(generate.read_jsonl(kd / "generations.jsonl")) == 4
    # align, export int8, evaluate, publish
    publish = tmp_path / "published"
    assert align.main(["--target", str(world / "target-ir"), "--draft", str(draft_hf), "--data", str(kd / "generations.jsonl"),
                       "--out", str(tmp_path / "align"), "--steps", "2", "--batch-size", "2", "--seq-len", "48",
                       "--threads", "1", "--eval-limit", "2", "--eval-max-new-tokens", "8", "--precision", "f32",
                       "--publish", str(publish)]) == 0
    assert (publish / "openvino_model.xml").exists() and (publish / "draft_vocab_map.json").exists()
    # the engine loads the published draft and decodes greedy-identically with it
    from models.resolve import resolve_model

    prompts = generate.read_jsonl(kd / "prompts-eval.jsonl")[:2]
    result = evaluate.evaluate(resolve_model(str(world / "target-ir")), resolve_model(str(publish)), prompts,
                               k=3, max_new_tokens=10, precision="f32")
    assert result["overall"]["identical_outputs"] == len(prompts)
    assert result["overall"]["prompts"] == len(prompts) and len(result["overall"]["acceptance_per_position"]) == 3
    # acceptance only (what a refresh compares): the prompts batched by the engine accept what they accept alone
    batched = evaluate.evaluate(resolve_model(str(world / "target-ir")), resolve_model(str(publish)), prompts,
                                k=3, max_new_tokens=10, precision="f32", plain=False)
    assert batched["overall"]["accepted_per_position"] == result["overall"]["accepted_per_position"]
    assert batched["overall"]["reached_per_position"] == result["overall"]["reached_per_position"]
    assert batched["overall"]["wall_clock_speedup"] is None and batched["overall"]["prompts"] == len(prompts)
    evaluate.plot(result, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").stat().st_size > 1000
    # KD data can also come from our speculative engine with the new draft
    assert generate.main(["--target", str(world / "target-ir"), "--prompts", "humaneval", "--out", str(tmp_path / "kd2"),
                          "--limit", "2", "--max-new-tokens", "8", "--backend", "engine", "--draft", str(publish)]) == 0
    assert [r["backend"] for r in generate.read_jsonl(tmp_path / "kd2" / "generations.jsonl")] == ["fastdraft-engine"] * 2


def test_sibling_with_reduced_tied_vocabulary_heals_exports_and_decodes_exactly(world, tmp_path):
    # the thrifty path of the shipped draft: keep one layer of a same-vocabulary model, cut input and
    # output to 200 rows + unknown, heal the blocks only, export int8, and verify exactly against the target
    from training import prune, vocab_map

    draft_hf = tmp_path / "pruned"
    assert prune.main(["--sibling", str(world / "target-hf"), "--keep-layers", "1", "--corpus", str(world / "corpus"),
                       "--draft-vocab-size", "200", "--reduce-input", "--out", str(draft_hf)]) == 0
    vocab = vocab_map.load(draft_hf)
    assert vocab.input_reduced and json.loads((draft_hf / "config.json").read_text())["vocab_size"] == 201
    before = weights(draft_hf)
    assert pretrain.main(["--corpus", str(world / "corpus"), "--stage", "code-nl", "--init", str(draft_hf),
                          "--freeze-embeddings", "--steps", "2", "--batch-size", "2", "--seq-len", "32",
                          "--threads", "1", "--lr", "1e-2", "--out", str(tmp_path / "heal")]) == 0
    after = weights(tmp_path / "heal" / "hf")
    embedding = "model.embed_tokens.weight"
    assert torch.equal(before[embedding], after[embedding])
    assert any(not torch.equal(before[n], after[n]) for n in before if n != embedding)
    from models.resolve import resolve_model
    from training.export import export_draft

    ir = export_draft(tmp_path / "heal" / "hf", tmp_path / "ir", "int8")
    assert vocab_map.load(ir).input_reduced
    prompts = [{"id": "p1", "task": "code", "prompt": "def add(a, b):\n    "},
               {"id": "p2", "task": "chat", "prompt": "The river runs"}]
    result = evaluate.evaluate(resolve_model(str(world / "target-ir")), resolve_model(str(ir)), prompts,
                               k=3, max_new_tokens=12, precision="f32")
    assert result["overall"]["identical_outputs"] == len(prompts)
    assert result["overall"]["reached_per_position"][0] > 0  # the draft really proposed


def test_from_scratch_with_reduced_tied_vocabulary(world, tmp_path):
    # the recipe of the shipped draft at toy scale: SVD-initialized embeddings cut to N + 1 tied rows
    from training import vocab_map

    assert pretrain.main(pretrain_args(world, tmp_path / "scratch", "--steps", "2", "--embed-init", "svd",
                                       "--reduce-input")) == 0
    folder = tmp_path / "scratch" / "hf"
    vocab = vocab_map.load(folder)
    config = json.loads((folder / "config.json").read_text())
    assert vocab.input_reduced and config["vocab_size"] == vocab.model_vocab_size == 201
    assert config["tie_word_embeddings"] is True
    model, _ = load_draft(folder)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_resume_continues_exactly(world, tmp_path):
    assert pretrain.main(pretrain_args(world, tmp_path / "straight", "--steps", "4")) == 0
    # interrupted after 2 steps, then the same command again
    args = pretrain_args(world, tmp_path / "resumed", "--steps", "4", "--checkpoint-every", "100")
    assert pretrain.main(args + ["--stop-after-steps", "2"]) == 0
    assert not (tmp_path / "resumed" / "hf").exists()
    assert (tmp_path / "resumed" / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    assert pretrain.main(args) == 0
    straight, resumed = weights(tmp_path / "straight" / "hf"), weights(tmp_path / "resumed" / "hf")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    logs = [[json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("straight", "resumed")]
    assert logs[0] == logs[1] and len(logs[0]) == 4


def test_ddp_two_gloo_processes_match_one(world, tmp_path):
    common = pretrain_args(world, tmp_path / "x", "--steps", "1", "--warmup-steps", "0", "--schedule", "constant",
                           "--lr", "1e-2")
    single = [a if a != str(tmp_path / "x") else str(tmp_path / "single") for a in common]
    assert pretrain.main(single) == 0
    ddp = [a if a != str(tmp_path / "x") else str(tmp_path / "ddp") for a in common]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                "--master-port", "29517", "-m", "training.pretrain", *ddp],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    one, two = weights(tmp_path / "single" / "hf"), weights(tmp_path / "ddp" / "hf")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-5, msg=name)
    loss_one = json.loads((tmp_path / "single" / "log.jsonl").read_text())["loss"]
    loss_two = json.loads((tmp_path / "ddp" / "log.jsonl").read_text())["loss"]
    assert abs(loss_one - loss_two) < 1e-5


def test_corrupt_checkpoint_is_reported_with_its_path(world, tmp_path):
    out = tmp_path / "run"
    assert pretrain.main(pretrain_args(world, out, "--steps", "3", "--stop-after-steps", "1")) == 0
    state = out / "checkpoints" / "step-00000001" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(trainer.CheckpointError, match=str(state)):
        pretrain.main(pretrain_args(world, out, "--steps", "3"))


def test_corrupt_dataset_line_is_reported_with_its_location(world, tmp_path):
    data = tmp_path / "generations.jsonl"
    good = {"id": "a", "task": "code", "prompt": "def f():", "output": "    return 1\n"}
    data.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({**good, "id": "b"}) + "\n")
    draft = tmp_path / "draft"
    pretrain.main(pretrain_args(world, draft, "--steps", "1"))
    with pytest.raises(generate.DatasetError, match=f"{data}:2"):
        align.main(["--target", str(world / "target-ir"), "--draft", str(draft / "hf"), "--data", str(data),
                    "--out", str(tmp_path / "align"), "--steps", "1", "--batch-size", "2", "--seq-len", "16"])
    assert not (tmp_path / "align" / "checkpoints").exists()


def test_torn_last_line_is_dropped_on_resume(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "outp')
    assert [r["id"] for r in generate.read_jsonl(path, allow_torn_tail=True)] == ["a"]
    assert path.read_text() == json.dumps({"id": "a"}) + "\n"


def test_vocabulary_mismatch_is_refused_before_training(world, tmp_path):
    # a draft over a different tokenizer (other merges, other size)
    other_tok = fixtures.make_tokenizer(tmp_path / "other-tokenizer", vocab_size=300)
    fixtures.make_target(tmp_path / "other-hf", other_tok, seed=3)
    data = tmp_path / "g.jsonl"
    data.write_text(json.dumps({"id": "a", "task": "code", "prompt": "x", "output": "y"}) + "\n")
    with pytest.raises(align.VocabularyMismatch, match="does not match"):
        align.main(["--target", str(world / "target-ir"), "--draft", str(tmp_path / "other-hf"), "--data", str(data),
                    "--out", str(tmp_path / "align"), "--steps", "1"])
    assert not (tmp_path / "align").exists()


def test_publish_never_leaves_a_half_written_draft(tmp_path, monkeypatch):
    from training import publish as pub

    def make_ir(folder: Path, tag: str) -> Path:
        folder.mkdir(parents=True)
        for name in ("openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json"):
            (folder / name).write_text(f"{tag}:{name}")
        return folder

    dest = tmp_path / "served"
    pub.publish(make_ir(tmp_path / "v1", "v1"), dest)
    real_copy = pub._copy_file
    calls = {"n": 0}

    def failing_copy(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(pub, "_copy_file", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        pub.publish(make_ir(tmp_path / "v2", "v2"), dest)
    assert sorted(p.read_text() for p in dest.iterdir()) == sorted(f"v1:{n}" for n in
                                                                    ("openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json"))
    monkeypatch.setattr(pub, "_copy_file", real_copy)
    pub.publish(tmp_path / "v2", dest)
    assert all(p.read_text().startswith("v2:") for p in dest.iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".served")] == []
    with pytest.raises(FileNotFoundError, match="not an IR folder"):
        pub.publish(tmp_path, dest)


def test_remote_train_continues_a_grown_draft_from_int8_weights(world, tmp_path):
    # training.remote_train as a GPU box runs it, here on the CPU: pack (int8 weights, one corpus source),
    # train (grow 2 -> 3 layers, calibrate, train), then unpack the returned weights into an HF draft folder
    from training import remote_train

    assert pretrain.main(pretrain_args(world, tmp_path / "scratch", "--steps", "2", "--embed-init", "svd",
                                       "--reduce-input")) == 0
    draft = tmp_path / "scratch" / "hf"
    sources = json.loads((world / "corpus" / "manifest.json").read_text())["sources"]
    source = next(s for s in sources if s["domain"] == "nl")  # trained with stage "nl" below
    bundle = tmp_path / "bundle"
    remote_train.main(["pack", "--draft", str(draft), "--corpus", str(world / "corpus"), "--out", str(bundle),
                       "--weights", "int8", "--sources", source["name"]])
    assert json.loads((bundle / "bundle.json").read_text())["domains"] == {source["domain"]: source["tokens"]}
    sent, original = remote_train.bundle_state(bundle), weights(draft)
    for name, tensor in sent.items():  # int8 rows: within half a step of each row's scale
        step = original[name].abs().amax(dim=-1, keepdim=True).numpy() / 127 if tensor.ndim == 2 else 0
        assert np.all(np.abs(tensor - original[name].numpy()) <= step / 2 + 1e-6), name
    with pytest.raises(remote_train.BundleError, match="--sources: nowhere not in"):
        remote_train.pack(draft, world / "corpus", tmp_path / "b2", sources=["nowhere"])
    with pytest.raises(SystemExit) as exited:  # the CLI: the same message, exit status 2
        remote_train.main(["pack", "--draft", str(draft), "--corpus", str(world / "corpus"), "--out",
                           str(tmp_path / "b2"), "--sources", "nowhere"])
    assert exited.value.code == 2
    result = tmp_path / "result"
    remote_train.main(["train", "--bundle", str(bundle), "--work", str(tmp_path / "work"), "--out", str(result),
                       "--train-embeddings", "--grow-layers", "3", "--budget-s", "1", "--max-steps", "10",
                       "--batch-size", "2", "--seq-len", "16", "--lr", "1e-3", "--device", "cpu", "--stage", "nl"])
    assert json.loads((result / "model_config.json").read_text())["num_hidden_layers"] == 3
    remote_train.main(["unpack-result", "--draft", str(draft), "--bundle", str(bundle), "--result", str(result),
                       "--out", str(tmp_path / "trained")])
    trained, vocab = load_draft(tmp_path / "trained")
    assert trained.config.num_hidden_layers == 3 and vocab.input_reduced
    sent_generation = json.loads((draft / "generation_config.json").read_text())
    assert json.loads((tmp_path / "trained" / "generation_config.json").read_text())["eos_token_id"] == \
        sent_generation["eos_token_id"] is not None
    provenance = json.loads((tmp_path / "trained" / "fastdraft_provenance.json").read_text())
    assert provenance["steps"] == 10
    returned = np.load(result / "blocks-0.npz")
    q, scale = returned["model.layers.2.mlp.down_proj.weight::q"], returned["model.layers.2.mlp.down_proj.weight::scale"]
    torch.testing.assert_close(trained.model.layers[2].mlp.down_proj.weight,
                               torch.from_numpy(q.astype(np.float32) * scale[:, None]))


def test_agreement_counts_the_drafts_argmax_hits_on_target_text(world, tmp_path):
    from transformers import AutoTokenizer

    from training import agreement

    assert pretrain.main(pretrain_args(world, tmp_path / "d", "--steps", "2", "--reduce-input")) == 0
    folder, target = tmp_path / "d" / "hf", world / "target-hf"
    model, vocab = load_draft(folder)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # text a model generated greedily agrees with that model everywhere (12 tokens per record)
    own = []
    for number, prompt in enumerate(["def add(a, b):\n", "The river ran"]):
        prompt_ids, output = tokenizer(prompt, add_special_tokens=False)["input_ids"], []
        for _ in range(12):
            output.append(int(agreement.next_token_predictions(model, vocab, np.asarray(prompt_ids + output))[-1]))
        if tokenizer(tokenizer.decode(output), add_special_tokens=False)["input_ids"] == output:
            own.append({"id": f"own{number}", "task": "chat", "prompt": prompt, "output": tokenizer.decode(output)})
    assert own
    # real text: split fixture documents into a prompt and an output
    texts = [text for text in fixtures.source_texts().values() if len(text) > 200][:3]
    real = [{"id": f"real{n}", "task": "code", "prompt": text[:120], "output": text[120:400] + " ∑ζ§ ~^` ünï"}
            for n, text in enumerate(texts)]  # the rare characters are outside the 200-token draft vocabulary
    data = tmp_path / "generations.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in own + real))
    assert agreement.main(["--data", str(data), "--draft", str(folder), "--draft", str(target),
                           "--json", str(tmp_path / "agreement.json")]) == 0
    result = json.loads((tmp_path / "agreement.json").read_text())
    assert result[str(folder)]["chat"]["rate"] == 1.0 and result[str(folder)]["chat"]["tokens"] == 12 * len(own)
    # the full-vocabulary target on the real text: the hits an independent argmax over the whole sequence finds
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    hits = tokens = outside = 0
    for record in real:
        prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
        output = tokenizer(record["output"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            argmax = full(input_ids=torch.tensor([prompt + output])).logits[0].argmax(-1).tolist()
        hits += sum(argmax[len(prompt) - 1 + i] == token for i, token in enumerate(output))
        tokens += len(output)
        outside += sum(token not in set(vocab.draft_to_target.tolist()) for token in output)
    assert result[str(target)]["code"] == {"tokens": tokens, "agree": hits, "outside_vocab": 0,
                                            "rate": round(hits / tokens, 4)}
    assert hits < tokens
    assert result[str(folder)]["code"]["outside_vocab"] == outside > 0


RANK_WITH_A_FAST_CLOCK = """
import json, sys, time
from training import pretrain, trainer
if trainer.os.environ["RANK"] == "1":  # this rank's clock says an hour has passed since the run started
    started = []
    def fast_clock():
        started.append(1)
        return time.monotonic() + (3600 if len(started) > 1 else 0)
    trainer.clock = fast_clock
sys.exit(pretrain.main(json.loads(sys.argv[1])))
"""


def test_ddp_ranks_stop_together_when_their_clocks_disagree(world, tmp_path):
    # --max-minutes is decided by rank 0's clock on every rank: if rank 1 stopped by its own (an hour ahead
    # here), rank 0 would wait for it in the next step's all-reduce, forever
    args = pretrain_args(world, tmp_path / "run", "--steps", "3", "--max-minutes", "30")
    ranks = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29519"}
        ranks.append(subprocess.Popen([sys.executable, "-c", RANK_WITH_A_FAST_CLOCK, json.dumps(args)], cwd=REPO,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [process.communicate(timeout=180)[0] for process in ranks]
    except subprocess.TimeoutExpired:
        pytest.fail("the ranks did not finish within 180 s: they disagreed on when to stop and one waits for the other")
    finally:
        for process in ranks:
            process.kill()
    assert [process.returncode for process in ranks] == [0, 0], outputs[1][-3000:] + outputs[0][-3000:]
    assert (tmp_path / "run" / "hf" / "model.safetensors").exists()  # rank 0's clock: all 3 steps ran
