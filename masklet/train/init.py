"""Initialisation for training from random weights (a variant name without a checkpoint).

Why: from PyTorch's default initialisation the mask decoder first learns to segment "the shapes" and only
thousands of steps later which shape a click picked: until each attention's query and key projections agree,
the prompt's positional encoding and the image's do not match, so the click says nothing about where to look.
How long that plateau lasts depended on the seed (issue 16: 3,500 steps with one seed, over 4,500 with two
others). Starting each key projection as a copy of its query projection makes W_q^T W_k = W_q^T W_q positive
semi-definite, so q . k already grows with the similarity of the positional encodings at step 0. This is the
idea of mimetic initialisation (Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers", ICML
2023), which sets W_q W_k^T near a multiple of the identity. Checkpoints (Meta's or a fine-tuned run) are
never changed.
"""
from __future__ import annotations

import torch
from torch import nn

INIT_CHOICES = ("mimetic", "default")


@torch.no_grad()
def mimetic_init(model: nn.Module) -> int:
    """Copy the query projection of each of the mask decoder's attentions (`q_proj` / `k_proj` linears of
    equal shape in its two-way transformer) into its key projection, in place; biases are left as they are.
    Returns the number of attentions changed. Only the decoder: doing the same to Hiera's attentions was
    slower to leave the plateau (issue 16, 2 seeds)."""
    changed = 0
    for module in model.sam_mask_decoder.modules():
        q, k = getattr(module, "q_proj", None), getattr(module, "k_proj", None)
        if isinstance(q, nn.Linear) and isinstance(k, nn.Linear) and q.weight.shape == k.weight.shape:
            k.weight.copy_(q.weight)
            changed += 1
    return changed
