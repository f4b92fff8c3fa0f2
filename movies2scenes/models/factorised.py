"""The factorised scene encoder (issue 26, first part: the model; not yet a training option).

A scene of n shots × k frames is read in two steps: each frame through a *shot backbone* (E_shot,
or any pretrained image model) → one token per shot (the mean of its k frames' features); then a
small temporal transformer over the n shot tokens. The output is

    mean of the shot tokens  +  residual(transformer(tokens + shot positions))

with the residual's last projection initialised to zero, so an untrained encoder *is* the pooled
baseline a user already has (the E_shot mean), exactly; training can only add what a mean cannot
represent — the order of shots, shot/reverse-shot alternation, a change of place inside the
window, which shots carry the scene. The positional embedding is learned for the training n and
linearly resampled over shot positions for any other n (as SceneViT resamples its patch grid).

:class:`TemporalResidual` works on shot tokens directly (B, n, d) — the frozen-backbone case, which
trains on ``shot_features/`` arrays with no decoding; :class:`FactorisedSceneEncoder` wraps a
backbone for pixels (B, n, k, C, H, W), the input SceneViT takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn


def resample_shot_positions(pos: torch.Tensor, n: int) -> torch.Tensor:
    """(1, n0, d) positional embedding over shot positions → (1, n, d), linear over positions
    (unchanged when n == n0)."""
    if pos.shape[1] == n:
        return pos
    return F.interpolate(pos.transpose(1, 2), size=n, mode="linear", align_corners=True).transpose(1, 2)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of (B, n, d); ``mask`` (B, n) True = a real shot."""
    if mask is None:
        return x.mean(1)
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class TemporalResidual(nn.Module):
    """Shot tokens (B, n, dim) → (B, dim): their mean + a zero-initialised residual from a small
    transformer (timm ``Block``s) over the tokens with a learned embedding of shot positions."""

    def __init__(self, dim: int, shots: int = 9, depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0,
                 width: int | None = None):
        super().__init__()
        # wide features (1280-d ImageNet) are read at ``width``: the transformer costs O(width²) per
        # shot; its zero-initialised output projection maps back to ``dim``, so step 0 is still the mean
        width = dim if width is None else min(width, dim)
        self.inp = nn.Linear(dim, width) if width < dim else nn.Identity()
        heads = max(h for h in range(1, heads + 1) if width % h == 0)  # at most ``heads``, dividing width
        self.pos = nn.Parameter(torch.zeros(1, shots, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)  # step 0: the residual is exactly 0, the output the mean
        nn.init.zeros_(self.out.bias)
        self.num_features = dim

    def positions(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B or 1, n, d): the shot positions of each window, resampled to its own number of real
        shots (``mask``: real shots first, then padding; padded positions get zeros)."""
        n = tokens.shape[1]
        if mask is None:
            return resample_shot_positions(self.pos, n).to(tokens.dtype)
        lengths = mask.sum(1)
        out = torch.zeros(len(tokens), n, tokens.shape[2], dtype=tokens.dtype, device=tokens.device)
        for length in lengths.unique().tolist():
            if length:
                out[lengths == length, :length] = resample_shot_positions(self.pos, length).to(tokens.dtype)
        return out

    def residual(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.inp(tokens)
        h = tokens + self.positions(tokens, mask)
        if mask is None:
            h = self.blocks(h)
        else:  # padded shots neither attend nor are attended to
            attn_mask = (mask[:, None, None, :]).expand(-1, 1, tokens.shape[1], -1)
            for blk in self.blocks:
                h = h + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(h), attn_mask=attn_mask)))
                h = h + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(h))))
        return self.out(masked_mean(self.norm(h), mask))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if tokens.ndim != 3:
            raise ValueError(f"TemporalResidual input must be (B, n, d) shot tokens, got {tuple(tokens.shape)}")
        return masked_mean(tokens, mask) + self.residual(tokens, mask)


class FactorisedSceneEncoder(nn.Module):
    """(B, n, k, C, H, W) pixels → (B, d): ``backbone`` (any module mapping (N, C, H, W) to (N, d),
    e.g. a timm model with ``num_classes=0``) per frame, the mean of each shot's k frames as its
    token, then :class:`TemporalResidual`. ``freeze_backbone``: the backbone's weights do not train
    (and run without building a graph)."""

    def __init__(self, backbone: nn.Module, dim: int, shots: int = 9, depth: int = 2, heads: int = 4,
                 freeze_backbone: bool = True):
        super().__init__()
        self.backbone = backbone
        self.temporal = TemporalResidual(dim, shots, depth, heads)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            backbone.requires_grad_(False)
        self.num_features = dim

    def shot_tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 6:
            raise ValueError(f"scene input must be (B, n, k, C, H, W), got {tuple(x.shape)}")
        b, n, k = x.shape[:3]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            f = self.backbone(x.flatten(0, 2))  # (B·n·k, d)
        return f.reshape(b, n, k, -1).mean(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.shot_tokens(x))


def train_factorised(scenes_a, scenes_b, steps: int = 300, batch: int = 64, lr: float = 1e-3, seed: int = 0,
                     depth: int = 2, heads: int = 4, proj_dim: int = 128, width: int = 256) -> TemporalResidual:
    """A frozen-backbone factorised encoder trained on (P, n, d) shot-feature windows of the two
    scenes of P mined pairs: symmetric InfoNCE (the scene head's pair loss) on a projection of its
    output, both directions; seeded, CPU-cheap. Returns the encoder (the projection is dropped, as
    a MoCo head is), which starts exactly at the mean."""
    from .scene_head import fit_pairs

    torch.manual_seed(seed)
    enc = TemporalResidual(scenes_a.shape[2], scenes_a.shape[1], depth, heads, width=width)
    proj = nn.Sequential(nn.Linear(scenes_a.shape[2], 256), nn.GELU(), nn.Linear(256, proj_dim))
    fit_pairs(lambda x: proj(enc(x)), [*enc.parameters(), *proj.parameters()], scenes_a, scenes_b, steps, batch,
              lr, seed)
    return enc.eval()


@torch.no_grad()
def embed_windows(enc: TemporalResidual, clips) -> "np.ndarray":
    """Embeddings of shot-feature clips of any length (each (n_i, d))."""
    import numpy as np

    return np.stack([enc(torch.from_numpy(np.asarray(x, np.float32))[None])[0].numpy() for x in clips])
