"""Memory-lean global attention for SAM's image encoder, same arithmetic as the original.

SAM's ``Attention.forward`` materialises the whole score matrix of every head at once:
for vit_h's global-attention blocks that is 16 x 4096 x 4096 float32 = 1 GiB, and adding
the relative-position terms and the softmax make two more, so one image peaks about 3 GiB
above the weights (the reason a vit_h server outgrows SageMaker Serverless' 6 GB). Here
the heads are processed a few at a time; every operation per head is the one SAM does, so
results are the same (the tests compare embeddings bit for bit), while the peak drops to
a few hundred MB.
"""

from __future__ import annotations

import functools

import torch
from segment_anything.modeling.image_encoder import Attention, add_decomposed_rel_pos

SCORE_BUDGET_BYTES = 256 * 2**20  # score matrices alive at once


def lean_attention(module: Attention, x: torch.Tensor) -> torch.Tensor:
    """``module.forward(x)`` computed a few heads at a time. x: (B, H, W, C)."""
    batch, height, width, _ = x.shape
    tokens = height * width
    qkv = module.qkv(x).reshape(batch, tokens, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, batch * module.num_heads, tokens, -1).unbind(0)
    out = torch.empty_like(q)
    step = max(1, SCORE_BUDGET_BYTES // (tokens * tokens * q.element_size()))
    for start in range(0, q.shape[0], step):
        part = slice(start, start + step)
        attn = (q[part] * module.scale) @ k[part].transpose(-2, -1)
        if module.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q[part], module.rel_pos_h, module.rel_pos_w, (height, width), (height, width))
        out[part] = attn.softmax(dim=-1) @ v[part]
    x = out.view(batch, module.num_heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return module.proj(x)


def use_lean_attention(image_encoder: torch.nn.Module) -> int:
    """Route the global-attention blocks (window_size 0) through :func:`lean_attention`.
    Returns how many blocks were changed."""
    changed = 0
    for block in getattr(image_encoder, "blocks", []):
        if getattr(block, "window_size", None) == 0 and isinstance(block.attn, Attention):
            block.attn.forward = functools.partial(lean_attention, block.attn)
            changed += 1
    return changed
