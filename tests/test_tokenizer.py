"""The runtime's tokenizer and chat template against transformers, on the Qwen2.5 tokenizer files."""

import pytest
from transformers import AutoTokenizer

from qwen_edge.runtime.tokenizer import Tokenizer, TokenizerError

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Écris «bonjour» en 日本語 🙂"},
        {"role": "assistant", "content": "こんにちは"},
        {"role": "user", "content": "def f(x):\n    return x"},
    ],
]


def test_encode_and_chat_template_match_transformers(shared_tokenizer, wikitext_lines):
    ours, ref = Tokenizer(shared_tokenizer), AutoTokenizer.from_pretrained(shared_tokenizer)
    for line in wikitext_lines[:200]:
        assert ours.encode(line) == ref(line, add_special_tokens=False).input_ids
    for messages in CONVERSATIONS:
        for add in (True, False):
            expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
            assert ours.apply_chat_template(messages, add_generation_prompt=add) == expected
    assert ours.token_to_id("<|im_end|>") == 151645


def test_folder_without_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="has no tokenizer.json"):
        Tokenizer(tmp_path)
