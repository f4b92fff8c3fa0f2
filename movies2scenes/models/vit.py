"""timm ViT backbones: one factory for every encoder (``create_vit``: any timm ViT by name at any
image/patch size, with depth/width overrides for tiny demo models; ``num_classes=0`` so the output
is the pooled class-token feature) and :class:`SceneViT`, which reads a whole scene of n shots × k
frames through one of them. Saving and loading them: ``models/folder.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ViTConfig


def vit_kwargs(cfg: ViTConfig) -> dict:
    kw = {"img_size": cfg.img_size, "patch_size": cfg.patch_size, "num_classes": 0}
    for name in ("embed_dim", "depth", "num_heads"):
        if getattr(cfg, name):
            kw[name] = getattr(cfg, name)
    return kw


def create_vit(cfg: ViTConfig) -> nn.Module:
    """A randomly initialised timm ViT (never downloads weights)."""
    import timm

    if not timm.is_model(cfg.arch) or "vit" not in cfg.arch:
        raise ValueError(f"model arch {cfg.arch!r} is not a timm ViT (e.g. vit_base_patch16_224)")
    return timm.create_model(cfg.arch, pretrained=False, **vit_kwargs(cfg))




# ----------------------------------------------------------------------------------------------
# scenes: n shots × k frames through one ViT


class SceneViT(nn.Module):
    """A timm ViT that reads a whole scene: input (B, n, k, C, H, W), n shots × k frames.

    Every frame is cut into the ViT's N = gh × gw patches by its own patch embedding; the n·k
    frames are laid side by side as one wide image of gh × (n·k·gw) patches (frame order: shot
    0's k frames, then shot 1's, ...), and the positional embedding learned for one frame's gh × gw
    grid is resampled to that grid with ``timm.layers.resample_abs_pos_embed`` (2-D bicubic, as for
    a ViT resolution change). One class token, then all N·n·k patch tokens, then timm's own blocks,
    norm and class-token pooling. The same weights take any n and k; with n = k = 1 nothing is
    resampled and the output equals the plain timm ViT's on that frame. (B, C, H, W) input is
    read as n = k = 1.

    ``self.vit`` *is* the timm model (state-dict keys are timm's), so the single-frame backbone
    loads in timm directly.
    """

    def __init__(self, vit: nn.Module, grad_checkpointing: bool = False):
        super().__init__()
        for name, ok in (("cls_token", getattr(vit, "cls_token", None) is not None),
                         ("no reg tokens", not getattr(vit, "reg_token", None) is not None),
                         ("class token in pos_embed", not getattr(vit, "no_embed_class", False)),
                         ("absolute pos_embed", getattr(vit, "pos_embed", None) is not None),
                         ("token pooling", getattr(vit, "global_pool", "token") == "token")):
            if not ok:
                raise ValueError(f"SceneViT needs a timm ViT with {name}")
        self.vit = vit
        self.num_features = vit.num_features
        self.grad_checkpointing = grad_checkpointing

    @property
    def input_size(self) -> int:
        """The side of the square view each frame is read at (px)."""
        return int(self.vit.patch_embed.img_size[0])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.vit.patch_embed.grid_size)

    def pos_embed(self, frames: int) -> torch.Tensor:
        """(1, 1 + N·frames, D): the class position, then the resampled patch positions."""
        from timm.layers import resample_abs_pos_embed

        gh, gw = self.grid
        return resample_abs_pos_embed(self.vit.pos_embed, new_size=[gh, gw * frames], old_size=[gh, gw],
                                      num_prefix_tokens=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, k, C, H, W) → (B, 1 + N·n·k, D) after the blocks and final norm."""
        if x.ndim == 4:
            x = x[:, None, None]
        if x.ndim != 6:
            raise ValueError(f"SceneViT input must be (B, n, k, C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        b, n, k = x.shape[:3]
        gh, gw = self.grid
        t = self.vit.patch_embed(x.flatten(0, 2))  # (B·n·k, N, D)
        d = t.shape[-1]
        t = t.reshape(b, n * k, gh, gw, d).permute(0, 2, 1, 3, 4).reshape(b, gh * n * k * gw, d)
        t = torch.cat([self.vit.cls_token.expand(b, -1, -1), t], dim=1) + self.pos_embed(n * k)
        t = self.vit.norm_pre(self.vit.patch_drop(self.vit.pos_drop(t)))
        if self.grad_checkpointing and self.training:
            from torch.utils.checkpoint import checkpoint

            for blk in self.vit.blocks:
                t = checkpoint(blk, t, use_reentrant=False)
        else:
            t = self.vit.blocks(t)
        return self.vit.norm(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_features): the pooled scene embedding (timm's head path, no classifier)."""
        return self.vit.forward_head(self.tokens(x))


def create_scene_vit(cfg: ViTConfig, grad_checkpointing: bool = False) -> SceneViT:
    return SceneViT(create_vit(cfg), grad_checkpointing)
