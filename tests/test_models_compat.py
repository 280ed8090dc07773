"""Draft/target tokenizer compatibility: equal tokenizers pass; the error names the first difference."""

from __future__ import annotations

import pytest

from models.compat import check_compatible
from models.errors import VocabMismatchError


def word_level(tokens: list[str], eos: str = "</s>"):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel({token: i for i, token in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, unk_token="<unk>")


BASE = ["<unk>", "</s>", "<pad>", "foo", "baz", "qux"]


def test_same_vocab_passes():
    check_compatible(word_level(BASE), word_level(list(BASE)))


def test_first_different_token_is_named():
    draft = list(BASE)
    draft[3], draft[5] = "bar", "quux"
    with pytest.raises(VocabMismatchError, match=r"token id 3: target 'foo' vs draft 'bar'"):
        check_compatible(word_level(BASE), word_level(draft))


def test_vocab_size_is_named():
    with pytest.raises(VocabMismatchError, match=r"vocab size 6 vs 7 .*token id 6: target None vs draft 'extra'"):
        check_compatible(word_level(BASE), word_level(BASE + ["extra"]))


def test_special_ids_must_match():
    with pytest.raises(VocabMismatchError, match=r"eos_token_id differs: target 1 vs draft 2"):
        check_compatible(word_level(BASE), word_level(BASE, eos="<pad>"))


@pytest.mark.slow
def test_smollm2_against_itself_and_folders(smollm2_int8, smollm2_fp32):
    check_compatible(smollm2_int8.tokenizer_dir, smollm2_fp32.tokenizer_dir)
