"""Encoding labeled text for the classifier: templates, token types, truncation."""

from hypothesis import given
from hypothesis import strategies as st

from transferlab.inputs.text import _truncate, encode_texts


def _truncate_by_popping(a, b, budget):
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) >= len(b) else b).pop()
    return a, b


@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 60))
def test_closed_form_truncation_matches_longest_first(la, lb, budget):
    a, b = list(range(la)), list(range(100, 100 + lb))
    assert _truncate(a, b, budget) == _truncate_by_popping(a, b, budget)


def test_encoder_and_decoder_templates(tokenizer):
    enc = encode_texts(tokenizer, "encoder", ["the cat sat ."], ["a dog ran ."], max_len=64, labels=[1])
    ids, types = enc.input_ids[0], enc.token_type_ids[0]
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id and ids.count(tokenizer.sep_id) == 2
    first_sep = ids.index(tokenizer.sep_id)
    assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1:]) == {1}
    dec = encode_texts(tokenizer, "decoder", ["the cat sat ."], None, max_len=64)
    assert dec.input_ids[0][-1] == tokenizer.eos_id and tokenizer.cls_id not in dec.input_ids[0]
    short = encode_texts(tokenizer, "encoder", ["the cat sat on the mat ."] * 2, ["a dog ran ."] * 2, max_len=8)
    assert all(len(x) == 8 for x in short.input_ids)
