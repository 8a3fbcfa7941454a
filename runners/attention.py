"""Leaner forms of SAM's image-encoder blocks, same arithmetic as the original.

:func:`lean_block` replaces ``Block.forward`` (:func:`use_lean_encoder` routes every block
through it; the torch encoder and the OpenVINO conversion use it):

- Global-attention blocks: SAM's ``Attention.forward`` materialises the whole score matrix of
  every head at once: for vit_h's global-attention blocks that is 16 x 4096 x 4096 float32 =
  1 GiB, and adding the relative-position terms and the softmax make two more, so one image
  peaks about 3 GiB above the weights (the reason a vit_h server outgrows SageMaker Serverless'
  6 GB). Here (:func:`attend`) the heads are processed a few at a time; every operation per head
  is the one SAM does, so results are the same (the tests compare embeddings bit for bit), while
  the peak drops to a few hundred MB.
- Windowed blocks: SAM pads the 64 x 64 token grid with zero tokens to a multiple of the window
  (70 x 70 for 14) and runs attention's ``qkv`` and ``proj`` linear layers on all 4900 rows,
  20% more than the 4096 real ones. A zero token's ``qkv`` is exactly ``qkv``'s bias, and
  ``proj``'s padded rows are cropped away unread, so here ``qkv`` runs on the real tokens, the
  padded positions get the bias, and ``proj`` runs after cropping: a sixth less linear-layer
  work in those blocks. ``window_partition`` and the split into heads are one transpose, and
  the way back one more (SAM copies the whole ``qkv`` twice each way).
- Layer norms, linear layers, residual sums and the MLP run on (B*H*W, C) rows, not on SAM's
  (B, H, W, C) grid: on the 4-D grid OpenVINO reordered each layer norm's input to a
  channels-last layout of that shape and back (vit_b bf16: 60 ms an image in reorders). Each
  row is the same product of the same weights, and on CPU the embedding stays bit-identical
  (the tests compare it). Both changes together: vit_b's converted encoder 3-4% faster in bf16
  and fp32 on an EPYC (docs/performance.md).

The conversion takes one head per chunk in the global blocks (:data:`CONVERTED_HEADS_PER_CHUNK`):
OpenVINO runs each chunk as one fused attention kernel, and a head's relative-position term
(4096 x 4096) then stays in the CPU's cache between the add that makes it and the kernel that
reads it.

``sdpa=True`` (``SEGANY_ATTENTION=sdpa``, the default for the torch encoder on CUDA) computes each
chunk with ``torch.nn.functional.scaled_dot_product_attention``, the relative-position terms
handed in as its additive mask: on a GPU that runs fused (memory-efficient) kernels in place of
the separate matmul, add, softmax and matmul. The arithmetic is SAM's up to rounding (softmax
of q k^T scale + rel-pos, the order of the sums inside the kernel differing): on CPU in float32
the embedding is within 1e-4 of SAM's and masks equal to IoU 0.999 (tests/test_attention_sdpa.py).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, Block, add_decomposed_rel_pos, get_rel_pos

SCORE_BUDGET_BYTES = 256 * 2**20  # score matrices alive at once
# vit_b bf16 on a Xeon with AMX, 4 heads a chunk -> 1: 1.06 -> 0.91 s an image (f32 3.9 -> 3.7 s).
# Not in torch: there a batch of one head takes another matmul kernel on some CPUs (1e-6 off SAM's).
CONVERTED_HEADS_PER_CHUNK = 1
# SDPA materialises only the relative-position mask; a GPU wants few, large kernel launches.
SDPA_MASK_BUDGET_BYTES = 1024 * 2**20


def rel_pos_mask(module: Attention, q: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The decomposed relative-position terms SAM adds to the scores, as one additive mask.
    q: (N, H*W, C) unscaled queries -> (N, H*W, H*W), the sum ``add_decomposed_rel_pos`` adds
    (height term, then width term)."""
    height, width = size
    rel_h = get_rel_pos(height, height, module.rel_pos_h)  # (H, H, C)
    rel_w = get_rel_pos(width, width, module.rel_pos_w)  # (W, W, C)
    r_q = q.reshape(q.shape[0], height, width, -1)
    term_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h)
    term_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w)
    mask = term_h[:, :, :, :, None] + term_w[:, :, :, None, :]
    return mask.reshape(q.shape[0], height * width, height * width)


def attend(module: Attention, qkv: torch.Tensor, heads_per_chunk: int | None = None, sdpa: bool = False,
           window: int = 0) -> torch.Tensor:
    """SAM's attention between ``qkv`` and ``proj``: qkv (B, H, W, 3C) -> (B, H, W, C), the
    heads' outputs before the output projection. ``window`` > 0: attention within each window x
    window square (H and W multiples of it, windows in SAM's order); 0: over the whole grid.
    ``heads_per_chunk`` heads (of all windows) at a time (None: as many as fit
    :data:`SCORE_BUDGET_BYTES`, or :data:`SDPA_MASK_BUDGET_BYTES` with ``sdpa``).
    ``sdpa``: each chunk in ``scaled_dot_product_attention`` (see the module's docs)."""
    batch, height, width, _ = qkv.shape
    size = (window, window) if window else (height, width)
    grid = (height // size[0], width // size[1])
    tokens, num_heads = size[0] * size[1], module.num_heads
    head_dim = qkv.shape[-1] // (3 * num_heads)
    # One transpose from the grid to (q/k/v, window and head, token, C): window_partition's and
    # the heads' split are one permutation, not two copies of the whole qkv one after the other.
    qkv = qkv.view(batch, grid[0], size[0], grid[1], size[1], 3, num_heads, head_dim)
    q, k, v = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, -1, tokens, head_dim).unbind(0)

    def heads(part: slice) -> torch.Tensor:
        if sdpa:
            # 4-D (1, heads, tokens, C): the fused kernels take no other rank (3-D runs the unfused math)
            mask = rel_pos_mask(module, q[part], size)[None] if module.use_rel_pos else None
            out = F.scaled_dot_product_attention(q[part][None], k[part][None], v[part][None], attn_mask=mask, scale=module.scale)
            return out[0]
        attn = (q[part] * module.scale) @ k[part].transpose(-2, -1)
        if module.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q[part], module.rel_pos_h, module.rel_pos_w, size, size)
        return attn.softmax(dim=-1) @ v[part]

    budget = SDPA_MASK_BUDGET_BYTES if sdpa else SCORE_BUDGET_BYTES
    step = heads_per_chunk or max(1, budget // (tokens * tokens * q.element_size()))
    # Concatenated, not written into a preallocated tensor: the same bytes, and the converted graph
    # gets one Concat instead of a ScatterNDUpdate per chunk (OpenVINO runs those with a generic
    # kernel: 8 ms of a vit_b global block in bf16).
    out = torch.cat([heads(slice(start, start + step)) for start in range(0, q.shape[0], step)])
    out = out.view(batch, grid[0], grid[1], num_heads, size[0], size[1], head_dim)  # and back in one transpose
    return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, height, width, num_heads * head_dim)


def lean_block(block: Block, x: torch.Tensor, heads_per_chunk: int | None = None, sdpa: bool = False) -> torch.Tensor:
    """``block.forward(x)``, x (B, H, W, C), in the forms the module's docs list: the norms,
    linear layers, residual sums and MLP on (B*H*W, C) rows, attention by :func:`attend`
    (``heads_per_chunk``: the global blocks' chunks), a windowed block's ``qkv`` on the real
    tokens only."""
    batch, height, width, channels = x.shape
    rows = x.reshape(-1, channels)
    size, qkv_layer = block.window_size, block.attn.qkv
    qkv = qkv_layer(block.norm1(rows)).view(batch, height, width, -1)
    pad_h, pad_w = ((-height) % size, (-width) % size) if size else (0, 0)
    if pad_h or pad_w:  # what qkv gives the zero tokens window_partition would have padded with
        zero_token = qkv_layer.bias if qkv_layer.bias is not None else qkv.new_zeros(qkv.shape[-1])
        # Each strip expanded to its own shape: the conversion folds them into constants, and slicing
        # them out of one padded grid had OpenVINO build that grid first (vit_h: 75 MB a block).
        qkv = torch.cat([qkv, zero_token.expand(batch, height, pad_w, -1)], dim=2)
        qkv = torch.cat([qkv, zero_token.expand(batch, pad_h, width + pad_w, -1)], dim=1)
    out = attend(block.attn, qkv, None if size else heads_per_chunk, sdpa, window=size)
    if pad_h or pad_w:
        out = out[:, :height, :width]  # the padded tokens' outputs, unread by proj
    rows = rows + block.attn.proj(out.reshape(-1, channels))
    rows = rows + block.mlp(block.norm2(rows))
    out = rows.view(batch, height, width, channels)
    if torch.jit.is_tracing() or out.stride() == x.stride():  # (a traced graph has no memory layouts)
        return out
    # SAM's blocks keep their input's memory layout (patch_embed's permute: channels first), and
    # the neck's convolution picks its kernel by it: the same layout, the same embedding bits
    return torch.empty_like(x).copy_(out)


def use_lean_encoder(image_encoder: torch.nn.Module, heads_per_chunk: int | None = None, sdpa: bool = False) -> tuple[int, int]:
    """Route every block of the encoder through :func:`lean_block` (``heads_per_chunk``: the global
    blocks'; ``sdpa``: every block's attention in ``scaled_dot_product_attention``); returns how
    many (global, windowed) blocks were changed."""
    changed = [0, 0]
    for block in getattr(image_encoder, "blocks", []):
        if isinstance(block, Block) and isinstance(block.attn, Attention):
            block.forward = functools.partial(lean_block, block, heads_per_chunk=heads_per_chunk, sdpa=sdpa)
            changed[block.window_size > 0] += 1
    return changed[0], changed[1]
