"""Leaner forms of SAM's image-encoder attention, same arithmetic as the original.

- :func:`lean_attention` (global-attention blocks; the torch encoder and the converted one):
  SAM's ``Attention.forward`` materialises the whole score matrix of every head at once: for
  vit_h's global-attention blocks that is 16 x 4096 x 4096 float32 = 1 GiB, and adding the
  relative-position terms and the softmax make two more, so one image peaks about 3 GiB above
  the weights (the reason a vit_h server outgrows SageMaker Serverless' 6 GB). Here the heads
  are processed a few at a time; every operation per head is the one SAM does, so results are
  the same (the tests compare embeddings bit for bit), while the peak drops to a few hundred MB.
- :func:`unpadded_window_block` (windowed blocks): SAM pads the 64 x 64 token grid with zero
  tokens to a multiple of the window (70 x 70 for 14) and runs attention's ``qkv`` and ``proj``
  linear layers on all 4900 rows, 20% more than the 4096 real ones. A zero token's ``qkv`` is
  exactly ``qkv``'s bias, and ``proj``'s padded rows are cropped away unread, so here ``qkv``
  runs on the real tokens, the padded positions get the bias, and ``proj`` runs after
  cropping: a sixth less linear-layer work in those blocks. Each row is the same product of
  the same weights, and on CPU the embedding stays bit-identical (the tests compare it).

:func:`use_lean_encoder` applies both; the torch encoder and the OpenVINO conversion use it. The
conversion takes one head per chunk (:data:`CONVERTED_HEADS_PER_CHUNK`): OpenVINO runs each chunk
as one fused attention kernel, and a head's relative-position term (4096 x 4096) then stays in
the CPU's cache between the add that makes it and the kernel that reads it.
"""

from __future__ import annotations

import functools

import torch
from segment_anything.modeling.image_encoder import (
    Attention,
    Block,
    add_decomposed_rel_pos,
    window_partition,
    window_unpartition,
)

SCORE_BUDGET_BYTES = 256 * 2**20  # score matrices alive at once
# vit_b bf16 on a Xeon with AMX, 4 heads a chunk -> 1: 1.06 -> 0.91 s an image (f32 3.9 -> 3.7 s).
# Not in torch: there a batch of one head takes another matmul kernel on some CPUs (1e-6 off SAM's).
CONVERTED_HEADS_PER_CHUNK = 1


def attend(module: Attention, qkv: torch.Tensor, heads_per_chunk: int | None = None) -> torch.Tensor:
    """SAM's attention between ``qkv`` and ``proj``: qkv (B, H, W, 3C) -> (B, H, W, C), the
    heads' outputs before the output projection, ``heads_per_chunk`` heads at a time (None: as
    many as fit :data:`SCORE_BUDGET_BYTES`)."""
    batch, height, width, _ = qkv.shape
    tokens = height * width
    qkv = qkv.reshape(batch, tokens, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, batch * module.num_heads, tokens, -1).unbind(0)

    def heads(part: slice) -> torch.Tensor:
        attn = (q[part] * module.scale) @ k[part].transpose(-2, -1)
        if module.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q[part], module.rel_pos_h, module.rel_pos_w, (height, width), (height, width))
        return attn.softmax(dim=-1) @ v[part]

    step = heads_per_chunk or max(1, SCORE_BUDGET_BYTES // (tokens * tokens * q.element_size()))
    # Concatenated, not written into a preallocated tensor: the same bytes, and the converted graph
    # gets one Concat instead of a ScatterNDUpdate per chunk (OpenVINO runs those with a generic
    # kernel: 8 ms of a vit_b global block in bf16).
    out = torch.cat([heads(slice(start, start + step)) for start in range(0, q.shape[0], step)])
    return out.view(batch, module.num_heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)


def lean_attention(module: Attention, x: torch.Tensor, heads_per_chunk: int | None = None) -> torch.Tensor:
    """``module.forward(x)`` computed a few heads at a time. x: (B, H, W, C)."""
    return module.proj(attend(module, module.qkv(x), heads_per_chunk))


def use_lean_attention(image_encoder: torch.nn.Module, heads_per_chunk: int | None = None) -> int:
    """Route the global-attention blocks (window_size 0) through :func:`lean_attention`.
    Returns how many blocks were changed."""
    changed = 0
    for block in getattr(image_encoder, "blocks", []):
        if getattr(block, "window_size", None) == 0 and isinstance(block.attn, Attention):
            block.attn.forward = functools.partial(lean_attention, block.attn, heads_per_chunk=heads_per_chunk)
            changed += 1
    return changed


def unpadded_window_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """``block.forward(x)`` for a windowed block, with ``qkv`` and ``proj`` on the real tokens
    only. x: (B, H, W, C)."""
    shortcut = x
    x = block.norm1(x)
    batch, height, width, _ = x.shape
    size, qkv_layer = block.window_size, block.attn.qkv
    qkv = qkv_layer(x)
    pad_h, pad_w = (-height) % size, (-width) % size
    if pad_h or pad_w:  # what qkv gives the zero tokens window_partition would have padded with
        zero_token = qkv_layer.bias if qkv_layer.bias is not None else qkv.new_zeros(qkv.shape[-1])
        # Each strip expanded to its own shape: the conversion folds them into constants, and slicing
        # them out of one padded grid had OpenVINO build that grid first (vit_h: 75 MB a block).
        qkv = torch.cat([qkv, zero_token.expand(batch, height, pad_w, -1)], dim=2)
        qkv = torch.cat([qkv, zero_token.expand(batch, pad_h, width + pad_w, -1)], dim=1)
    windows, padded = window_partition(qkv, size)  # nothing left to pad
    x = window_unpartition(attend(block.attn, windows), size, padded, (height, width))
    x = shortcut + block.attn.proj(x)
    return x + block.mlp(block.norm2(x))


def use_unpadded_windows(image_encoder: torch.nn.Module) -> int:
    """Route the windowed blocks through :func:`unpadded_window_block`. Returns how many."""
    changed = 0
    for block in getattr(image_encoder, "blocks", []):
        if isinstance(block, Block) and block.window_size > 0:
            block.forward = functools.partial(unpadded_window_block, block)
            changed += 1
    return changed


def use_lean_encoder(image_encoder: torch.nn.Module, heads_per_chunk: int | None = None) -> tuple[int, int]:
    """Both forms above (``heads_per_chunk``: the global blocks'); returns how many (global,
    windowed) blocks were changed."""
    return use_lean_attention(image_encoder, heads_per_chunk), use_unpadded_windows(image_encoder)
