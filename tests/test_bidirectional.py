"""Every supported architecture becomes bidirectional through the loader, under each attention implementation."""

from __future__ import annotations

import pytest
import torch

from lm2vec import LM2Vec
from lm2vec.modeling.bidirectional import (
    SUPPORTED_ARCHITECTURES,
    StillCausalError,
    UnsupportedArchitectureError,
    probe_attention,
    set_bidirectional,
    verify_bidirectional,
)
from tests.tiny_models import VOCAB_SIZE, save_tiny_model

CASES = [(arch, impl) for arch, impls in SUPPORTED_ARCHITECTURES.items() for impl in impls]


def first_token_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]


def batch_with_changed_last_token(batch_size: int, length: int, pad: int) -> tuple[torch.Tensor, ...]:
    """Two batches that differ only in each row's last real token, plus their attention mask."""
    generator = torch.Generator().manual_seed(batch_size * 100 + pad)
    ids = torch.randint(4, VOCAB_SIZE, (batch_size, length + pad), generator=generator)
    mask = torch.ones_like(ids)
    if pad:
        mask[:, length:] = 0  # right padding on every row ...
        mask[0, :] = 1  # ... but the first row is full length, so the batch has mixed lengths
    last = mask.sum(dim=1) - 1
    changed = ids.clone()
    rows = torch.arange(batch_size)
    changed[rows, last] = 4 + (ids[rows, last] - 4 + 1) % (VOCAB_SIZE - 4)
    return ids, changed, mask


@pytest.mark.parametrize(("architecture", "attn"), CASES, ids=[f"{a}-{i}" for a, i in CASES])
def test_architecture_is_bidirectional_and_causal_on_request(architecture: str, attn: str, tmp_path) -> None:
    folder = save_tiny_model(architecture, tmp_path)
    bidirectional = LM2Vec.from_pretrained(folder, attn_implementation=attn, device="cpu").model
    causal = LM2Vec.from_pretrained(folder, attn_implementation=attn, bidirectional=False, device="cpu").model
    assert bidirectional.config._attn_implementation == attn
    for batch_size in (1, 4):
        for pad in (0, 3):
            ids, changed, mask = batch_with_changed_last_token(batch_size, length=7, pad=pad)
            before, after = (
                first_token_states(bidirectional, ids, mask),
                first_token_states(bidirectional, changed, mask),
            )
            assert not torch.allclose(before, after, atol=1e-5), "first token did not see the last one"
            before, after = first_token_states(causal, ids, mask), first_token_states(causal, changed, mask)
            torch.testing.assert_close(before, after)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_does_not_change_real_tokens(attn: str, tiny_llama) -> None:
    model = LM2Vec.from_pretrained(tiny_llama, attn_implementation=attn, device="cpu").model
    ids = torch.randint(4, VOCAB_SIZE, (1, 6), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([ids, torch.zeros((1, 3), dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros((1, 3), dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(input_ids=ids).last_hidden_state
        in_padding = model(input_ids=padded, attention_mask=mask).last_hidden_state[:, :6]
    torch.testing.assert_close(alone, in_padding, atol=1e-5, rtol=1e-4)


def test_flag_survives_save_and_plain_transformers_load(tiny_llama, tmp_path) -> None:
    from transformers import AutoModel

    LM2Vec.from_pretrained(tiny_llama, device="cpu").save_pretrained(tmp_path)
    plain = AutoModel.from_pretrained(tmp_path)
    assert plain.config.is_causal is False
    assert probe_attention(plain, VOCAB_SIZE)


def test_unknown_architecture_is_refused(tmp_path) -> None:
    folder = save_tiny_model("gpt2", tmp_path, n_embd=32, n_layer=2, n_head=4)
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2' is not supported"):
        LM2Vec.from_pretrained(folder, device="cpu")


def test_unsupported_attention_implementation_is_refused(tmp_path) -> None:
    folder = save_tiny_model("gemma2", tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="sdpa"):
        LM2Vec.from_pretrained(folder, attn_implementation="sdpa", device="cpu")


def test_stablelm_sdpa_ignores_the_config_flag_and_the_probe_notices(tmp_path) -> None:
    """The silent failure the probe exists for: setting only config.is_causal leaves StableLM's SDPA path causal
    for unpadded batches. set_bidirectional also clears the modules' flags, which fixes it."""
    from transformers import AutoModel

    folder = save_tiny_model("stablelm", tmp_path)
    model = AutoModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    model.config.is_causal = False
    assert not probe_attention(model, VOCAB_SIZE)
    with pytest.raises(StillCausalError, match="stablelm"):
        verify_bidirectional(model, VOCAB_SIZE)
    set_bidirectional(model)
    verify_bidirectional(model, VOCAB_SIZE)


def test_loader_refuses_a_model_that_stays_causal(tiny_llama, monkeypatch) -> None:
    """If a future transformers ignored the flag, loading must fail, never hand out a causal encoder."""
    import lm2vec.modeling.loading as loading

    monkeypatch.setattr(loading, "set_bidirectional", lambda model, bidirectional=True: None)
    with pytest.raises(StillCausalError, match="still causal"):
        LM2Vec.from_pretrained(tiny_llama, device="cpu")
