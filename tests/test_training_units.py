"""Unit checks of the draft factory's pieces: presets, vocab map, pruning, schedules, CLIs."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import presets, prune, trainer
from training import vocab_map as vm
from training.draft_folder import load_draft, save_draft

REPO = Path(__file__).resolve().parents[1]


def test_presets_table_and_overrides():
    tiny = presets.from_name("tiny")
    assert tiny.num_layers == 2 and tiny.draft_vocab_size is None
    assert presets.from_name("draft-12m").draft_vocab_size == 32768
    assert presets.from_name("tiny", draft_vocab_size=100, arch="llama").arch == "llama"
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        presets.from_name("huge")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        presets.DraftConfig("bad", hidden_size=65, num_heads=4)


@pytest.mark.parametrize("arch", presets.ARCHITECTURES)
def test_reduced_output_layer_reads_target_ids(arch, tmp_path):
    cfg = presets.from_name("tiny", arch=arch, draft_vocab_size=50)
    model = presets.build_model(cfg, vocab_size=300, seed=0)
    assert model.get_input_embeddings().weight.shape == (300, 64)
    assert model.lm_head.weight.shape == (50, 64)
    logits = model(input_ids=torch.tensor([[1, 299, 7]])).logits
    assert logits.shape == (1, 3, 50)
    # save / load round trip (not loadable by a plain from_pretrained: the head is cut)
    tokenizer_dir = tmp_path / "tok"
    tokenizer_dir.mkdir()
    (tokenizer_dir / "tokenizer.json").write_text("{}")
    vocab = vm.VocabMap(np.arange(0, 100, 2), 300)
    save_draft(model, tmp_path / "draft", tokenizer_dir, vocab)
    loaded, loaded_vocab = load_draft(tmp_path / "draft")
    assert np.array_equal(loaded_vocab.draft_to_target, vocab.draft_to_target)
    assert torch.equal(loaded(input_ids=torch.tensor([[1, 299, 7]])).logits, logits)
    assert np.array_equal(np.load(tmp_path / "draft" / vm.MAP_NPY), vocab.draft_to_target)


def test_vocab_selection_is_deterministic_and_keeps_specials():
    counts = np.array([5, 9, 9, 0, 1, 7, 0, 0], dtype=np.int64)
    vocab = vm.select(counts, 4, always_keep=[6])
    assert vocab.draft_to_target.tolist() == [1, 2, 5, 6]  # two most frequent + next + the special
    table = vocab.label_table()
    assert table.tolist() == [-100, 0, 1, -100, -100, 2, 3, -100]
    assert vocab.coverage(counts) == pytest.approx(25 / 31)
    with pytest.raises(ValueError, match="strictly increasing"):
        vm.VocabMap(np.array([3, 1]), 8)


def test_prune_keeps_layers_and_rows(tmp_path):
    target = presets.build_model(presets.from_name("tiny", num_layers=4), vocab_size=120, seed=1)
    ids = torch.tensor([[3, 8, 13, 21]])
    # keeping every layer and every row changes nothing
    full = presets.build_model(presets.from_name("tiny", num_layers=4), vocab_size=120, seed=1)
    prune.keep_layers(full, [0, 1, 2, 3])
    assert torch.equal(full(input_ids=ids).logits, target(input_ids=ids).logits)
    # keep layers 0 and 3, cut the head to 30 rows: logits are the kept rows of a 2-layer model
    pruned = presets.build_model(presets.from_name("tiny", num_layers=4), vocab_size=120, seed=1)
    prune.keep_layers(pruned, [0, 3])
    reference = pruned(input_ids=ids).logits
    rows = np.arange(0, 120, 4)
    presets.reduce_output_layer(pruned, len(rows), keep_ids=rows)
    assert pruned.config.num_hidden_layers == 2 and [b.self_attn.layer_idx for b in pruned.model.layers] == [0, 1]
    torch.testing.assert_close(pruned(input_ids=ids).logits, reference[..., rows])
    with pytest.raises(ValueError, match="distinct indexes"):
        prune.keep_layers(pruned, [0, 0])


def test_reduced_tied_vocabulary_reads_draft_ids_and_keeps_the_kept_logits(tmp_path):
    model = presets.build_model(presets.from_name("tiny"), vocab_size=120, seed=2)
    target_ids = torch.tensor([[3, 8, 12, 20]])
    vocab = vm.VocabMap(np.arange(0, 120, 4), 120, input_reduced=True)  # 30 rows + the unknown row 30
    reference = model(input_ids=target_ids[:, 1:]).logits[..., vocab.draft_to_target]
    presets.reduce_tied_vocabulary(model, vocab.draft_to_target)
    assert model.config.vocab_size == vocab.model_vocab_size == 31 and model.config.tie_word_embeddings
    assert model.lm_head.weight is model.get_input_embeddings().weight
    # every input in the map: the same computation over fewer rows (draft ids in, kept rows out)
    draft_ids = torch.from_numpy(vocab.input_table()[target_ids.numpy()])
    assert draft_ids.tolist() == [[vocab.unknown_row, 2, 3, 5]]  # 3 is outside the map
    logits = model(input_ids=draft_ids[:, 1:]).logits
    torch.testing.assert_close(logits[..., :30], reference)
    # v2 map file round trip; a version 1 file (no "input") still reads as target ids
    save_draft(model, tmp_path / "draft", _tokenizer_dir(tmp_path), vocab)
    loaded, loaded_vocab = load_draft(tmp_path / "draft")
    assert loaded_vocab.input_reduced and loaded_vocab.unknown_row == 30
    old = tmp_path / "v1"
    old.mkdir()
    (old / vm.MAP_JSON).write_text('{"format": "fastdraft-draft-vocab-map", "version": 1, "target_vocab_size": 120, '
                                   '"draft_vocab_size": 2, "draft_to_target": [0, 4]}')
    assert vm.load(old).input_reduced is False and vm.load(old).input_table() is None


def _tokenizer_dir(tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir(exist_ok=True)
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_schedules():
    args = argparse.Namespace(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, steps=100, schedule="wsd", decay_frac=0.2)
    assert trainer.lr_at(0, args) == pytest.approx(0.1)
    assert trainer.lr_at(50, args) == 1.0
    assert trainer.lr_at(79, args) == 1.0
    assert trainer.lr_at(99, args) == pytest.approx(0.1 + 0.9 * (1 / 20))
    args.schedule = "cosine"
    assert trainer.lr_at(10, args) == pytest.approx(1.0)
    assert trainer.lr_at(100, args) == pytest.approx(0.1)


@pytest.mark.parametrize("module", ["training.corpus", "training.pretrain", "training.prune", "training.generate",
                                    "training.align", "training.evaluate", "training.agreement", "training.grow"])
def test_every_stage_has_help(module):
    completed = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "--" in completed.stdout and "usage: python -m " + module in completed.stdout


@pytest.mark.parametrize("reduced", ["tied-input", "output-only"])
def test_grow_adds_identity_layers_and_keeps_the_logits(reduced):
    from training import grow

    model = presets.build_model(presets.from_name("tiny", num_layers=2), vocab_size=120, seed=3)
    if reduced == "tied-input":
        presets.reduce_tied_vocabulary(model, np.arange(0, 120, 4))
    else:
        presets.reduce_output_layer(model, 30, keep_ids=np.arange(0, 120, 4))
    ids = torch.tensor([[3, 8, 13, 21, 5]])
    grown = grow.grow(model, 5)
    assert grown.config.num_hidden_layers == 5 and [b.self_attn.layer_idx for b in grown.model.layers] == list(range(5))
    assert grow.layer_plan(2, 5) == [(0, False), (0, True), (0, True), (1, False), (1, True)]
    torch.testing.assert_close(grown(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=1e-6)
    if reduced == "tied-input":
        assert grown.lm_head.weight is grown.get_input_embeddings().weight
    # the copies are trainable layers, not frozen identities: their other weights are the original's
    torch.testing.assert_close(grown.model.layers[1].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    assert not grown.model.layers[1].mlp.down_proj.weight.any()
    with pytest.raises(ValueError, match="at least the draft's 2 layers"):
        grow.grow(model, 1)


def test_debian_package_source_reads_the_files_of_a_deb(tmp_path):
    import shutil

    from training import corpus

    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: fixture-doc\nVersion: 1.0\nArchitecture: all\n"
                                            "Maintainer: fastdraft\nDescription: test fixture\n")
    docs = root / "usr" / "share" / "doc" / "fixture" / "_sources"
    docs.mkdir(parents=True)
    (docs / "intro.rst.txt").write_text("Introduction\n============\n\nSome prose.\n")
    (docs / "skip.html").write_text("<p>not a source</p>")
    cache = tmp_path / "cache"
    (cache / "fixture-doc-1.0").mkdir(parents=True)  # fetched already: no apt-get call
    subprocess.run(["dpkg-deb", "--build", str(root), str(cache / "fixture-doc-1.0" / "fixture-doc_1.0_all.deb")],
                   check=True, capture_output=True)
    spec = {"name": "fixture-doc", "kind": "debian", "package": "fixture-doc", "version": "1.0",
            "include": ["usr/share/doc/fixture/_sources/*.rst.txt"],
            "domain": "nl", "cleaner": "text"}
    files = list(corpus.iter_source_files(spec, cache))
    assert files == [("usr/share/doc/fixture/_sources/intro.rst.txt", b"Introduction\n============\n\nSome prose.\n")]
