"""encode(): batching, ordering, instructions, truncation and bad input, on a tiny random Llama."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lm2vec import LM2Vec

SENTENCES = [
    "the cat sat on the mat .",
    "a dog ran",
    "the big red car is on the road in the city and the small blue car is not",
    "music",
    "a man plays guitar with a woman",
]


@pytest.fixture(scope="module")
def encoder(tiny_llama) -> LM2Vec:
    return LM2Vec.from_pretrained(tiny_llama, device="cpu")


def test_batched_results_equal_one_by_one_in_input_order(encoder) -> None:
    batched = encoder.encode(SENTENCES, batch_size=2)
    alone = np.stack([encoder.encode(sentence) for sentence in SENTENCES])
    assert batched.shape == (len(SENTENCES), encoder.get_sentence_embedding_dimension())
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last_token", "first_token"])
def test_every_pooling_mode_is_independent_of_batch_neighbours(tiny_llama, pooling: str) -> None:
    encoder = LM2Vec.from_pretrained(tiny_llama, pooling=pooling, device="cpu")
    batched = encoder.encode(SENTENCES + [("retrieve similar text", "a dog ran")], batch_size=8)
    alone = np.stack([encoder.encode(item) for item in SENTENCES + [("retrieve similar text", "a dog ran")]])
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=1e-4)


def test_last_token_pooling_appends_eos(tiny_llama) -> None:
    encoder = LM2Vec.from_pretrained(tiny_llama, pooling="last_token", device="cpu")
    (item,) = encoder.tokenize(["a dog ran"])
    assert item.input_ids[-1] == encoder.tokenizer.eos_token_id
    assert item.input_ids[:-1] == encoder.tokenizer("a dog ran")["input_ids"]


def test_instruction_tokens_are_attended_but_not_pooled(encoder) -> None:
    (item,) = encoder.tokenize([("retrieve similar text", "a dog ran")])
    tokens = encoder.tokenizer.convert_ids_to_tokens(item.input_ids)
    # BOS + "retrieve similar text :" are instruction; the text starts right after.
    assert tokens == ["<s>", "retrieve", "similar", "text", ":", "a", "dog", "ran"]
    assert item.instruction_length == 5
    token_states = encoder.encode(("retrieve similar text", "a dog ran"), output_value="token_embeddings")
    assert token_states.shape == (3, encoder.get_sentence_embedding_dimension())
    with_instruction = encoder.encode(("retrieve similar text", "a dog ran"))
    plain = encoder.encode("a dog ran")
    assert not np.allclose(with_instruction, plain, atol=1e-4), "the text should see the instruction"
    # Mean over the pooled token states is the sentence embedding: nothing of the instruction was pooled.
    np.testing.assert_allclose(token_states.mean(axis=0), with_instruction, atol=1e-5)


def test_instruction_boundary_comes_from_offsets_not_a_separator(encoder) -> None:
    """A text that itself contains the template's colon keeps its colon as text."""
    (item,) = encoder.tokenize([("find", ": a dog")])
    tokens = encoder.tokenizer.convert_ids_to_tokens(item.input_ids)
    assert tokens[item.instruction_length :] == [":", "a", "dog"]


def test_prompt_applies_one_instruction_to_every_string(encoder) -> None:
    with_prompt = encoder.encode(["a dog ran", "music"], prompt="search")
    as_pairs = encoder.encode([("search", "a dog ran"), ("search", "music")])
    np.testing.assert_allclose(with_prompt, as_pairs, atol=1e-6)


def test_output_types_and_normalisation(encoder) -> None:
    tensor = encoder.encode(SENTENCES, convert_to="torch", normalize=True)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor.norm(dim=1), torch.ones(len(SENTENCES)))
    token_states = encoder.encode(SENTENCES, output_value="token_embeddings")
    lengths = [len(encoder.tokenize([s])[0].input_ids) for s in SENTENCES]
    assert [t.shape[0] for t in token_states] == lengths


def test_empty_inputs(encoder) -> None:
    assert encoder.encode([]).shape == (0, encoder.get_sentence_embedding_dimension())
    embeddings = encoder.encode(["", "   ", "a dog"])
    assert np.isfinite(embeddings).all()
    assert np.isfinite(encoder.encode(("search", ""))).all()


def test_non_string_input_names_its_position(encoder) -> None:
    with pytest.raises(TypeError, match="Input 2 is a int"):
        encoder.encode(["a", "b", 3])
    with pytest.raises(TypeError, match="Input 0 is a tuple"):
        encoder.encode([("only one",)])


def test_truncation_is_reported_once(tiny_llama, caplog) -> None:
    encoder = LM2Vec.from_pretrained(tiny_llama, max_length=4, device="cpu")
    with caplog.at_level(logging.WARNING, logger="lm2vec"):
        embeddings = encoder.encode(["a dog ran fast", "a", "the cat sat on the mat"])
    assert embeddings.shape[0] == 3
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == ["2 of 3 inputs were truncated to max_length=4 tokens."]
    assert all(len(item.input_ids) <= 4 for item in encoder.tokenize(["the cat sat on the mat"] * 2))


def test_bad_options_are_refused(tiny_llama, encoder) -> None:
    with pytest.raises(ValueError, match="Unknown pooling mode"):
        LM2Vec.from_pretrained(tiny_llama, pooling="max", device="cpu")
    with pytest.raises(ValueError, match="convert_to"):
        encoder.encode(["a"], convert_to="list")


def test_none_and_lone_surrogates_are_named(encoder) -> None:
    with pytest.raises(
        TypeError, match="encode takes a str, an \\(instruction, text\\) pair or a list of them, got NoneType"
    ):
        encoder.encode(None)
    with pytest.raises(ValueError, match="Input 1 holds a lone surrogate \\(U\\+D800 at character 2\\)"):
        encoder.encode(["fine", "ab\ud800c"])


def test_echo_pools_only_the_second_copy_of_the_text(tiny_llama) -> None:
    echo = LM2Vec.from_pretrained(tiny_llama, bidirectional=False, text_template="echo", device="cpu")
    (item,) = echo.tokenize([("search", "a dog ran")])
    tokens = echo.tokenizer.convert_ids_to_tokens(item.input_ids)
    assert tokens == ["<s>", "search", ":", "a", "dog", "ran", "a", "dog", "ran"]
    assert item.instruction_length == 6  # BOS, instruction and the first copy are attended to, never pooled
    token_states = echo.encode(("search", "a dog ran"), output_value="token_embeddings")
    assert token_states.shape[0] == 3
    np.testing.assert_allclose(token_states.mean(axis=0), echo.encode(("search", "a dog ran")), atol=1e-5)
    plain = LM2Vec.from_pretrained(tiny_llama, bidirectional=False, device="cpu")
    first_copy = plain.encode(("search", "a dog ran"), output_value="token_embeddings")
    assert not np.allclose(token_states, first_copy, atol=1e-4), "the second copy should see the whole text"


def test_prompteol_pools_the_last_token_of_the_prompt(tiny_llama) -> None:
    prompteol = LM2Vec.from_pretrained(
        tiny_llama, bidirectional=False, pooling="last_token", text_template="prompteol", device="cpu"
    )
    assert prompteol.config.text_template == 'This sentence : "{text}" means in one word:"'
    (item,) = prompteol.tokenize(["a dog ran"])
    expected = prompteol.tokenizer('This sentence : "a dog ran" means in one word:"')["input_ids"]
    assert item.input_ids == expected  # the prompt's closing quote is last: no EOS appended
    assert item.input_ids[item.instruction_length] == prompteol.tokenizer.convert_tokens_to_ids("a")
    token_states = prompteol.encode("a dog ran", output_value="token_embeddings")
    np.testing.assert_allclose(token_states[-1], prompteol.encode("a dog ran"), atol=1e-6)


def test_a_templated_text_is_cut_so_that_the_whole_template_fits(tiny_llama) -> None:
    echo = LM2Vec.from_pretrained(tiny_llama, text_template="{text} , {text} .", max_length=10, device="cpu")
    (item,) = echo.tokenize(["the cat sat on the mat"])
    tokens = echo.tokenizer.convert_ids_to_tokens(item.input_ids)
    assert tokens == ["<s>", "the", "cat", "sat", ",", "the", "cat", "sat", "."] and item.truncated
    assert tokens[item.instruction_length :] == ["the", "cat", "sat", "."]


def test_bad_templates_and_templated_export_are_refused(tiny_llama, tmp_path) -> None:
    with pytest.raises(ValueError, match="text_template must contain"):
        LM2Vec.from_pretrained(tiny_llama, text_template="echoes", device="cpu")
    echo = LM2Vec.from_pretrained(tiny_llama, text_template="echo", device="cpu")
    with pytest.raises(ValueError, match="cannot be exported"):
        echo.save_pretrained(tmp_path / "echo")
    assert not (tmp_path / "echo").exists()


def test_dimensions_cuts_and_renormalises_only_to_trained_matryoshka_sizes(tiny_llama) -> None:
    encoder = LM2Vec.from_pretrained(tiny_llama, device="cpu")
    texts = ["a red car", "the dog ran fast", "music"]
    full = encoder.encode(texts)
    with pytest.raises(ValueError, match="dimensions=8 is not supported"):
        encoder.encode(texts, dimensions=8)  # not trained for it
    encoder.config.matryoshka_dims = [8, 16]
    cut = encoder.encode(texts, dimensions=8)
    np.testing.assert_allclose(cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), rtol=1e-5)
    assert encoder.encode(texts[0], dimensions=16).shape == (16,)
    assert encoder.encode([], dimensions=8).shape == (0, 8)
    np.testing.assert_allclose(np.linalg.norm(encoder.encode(texts, dimensions=32), axis=1), 1.0, rtol=1e-5)
    for refused in (4, 64):
        with pytest.raises(ValueError, match=f"dimensions={refused} is not supported.*trained for 8, 16, 32"):
            encoder.encode(texts, dimensions=refused)
    with pytest.raises(ValueError, match="sentence embeddings only"):
        encoder.encode(texts, dimensions=8, output_value="token_embeddings")
