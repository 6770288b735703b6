"""A Hugging Face Granite model as a mutune factory model: the model `mutune export --format hf`
writes a config.json for.

Granite is the Hugging Face architecture whose config carries µP's forward multipliers
(``embedding_multiplier``, ``logits_scaling``, ``attention_multiplier``, ``residual_multiplier``), so a
proxy searched with this factory transfers to a Granite ``config.json`` that trains the target in
plain ``transformers``. Width grows through the number of heads at a fixed head dim, so the
attention scale α_attn/√d_head is constant in width (what µP's 1/d scaling is at a fixed d).
Nothing is downloaded: the model is built from a config, and mutune initialises it.

    model:
      family: factory
      factory: examples.granite:build
      factory_kwargs: {head_dim: 16, layers: 2}
"""

from __future__ import annotations

import math


def build(
    width: int,
    vocab_size: int,
    seq_len: int,
    head_dim: int = 64,
    layers: int = 4,
    mlp_ratio: int = 4,
    alpha_attn: float = 1.0,
    depth: int | None = None,
    residual_mult: float = 1.0,
):
    """A GraniteForCausalLM of ``width`` (hidden size); ``depth`` and ``residual_mult`` are mutune's
    for depth scaling (CompleteP), ``layers`` the depth otherwise."""
    from transformers import GraniteConfig, GraniteForCausalLM

    config = GraniteConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=mlp_ratio * width,
        num_hidden_layers=depth or layers,
        num_attention_heads=width // head_dim,
        num_key_value_heads=width // head_dim,
        max_position_embeddings=seq_len,
        tie_word_embeddings=False,
        attention_multiplier=alpha_attn / math.sqrt(head_dim),
        residual_multiplier=residual_mult,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    config._attn_implementation = "eager"
    return GraniteForCausalLM(config)
