"""The factorised scene encoder (``scene_encoder.arch: factorised``).

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

**A scene in its movie's context** (``scene_encoder.factorised.context: L``; 0 = the scene alone):
the head reads a window of up to L of the movie's shots around the scene (as centred as the movie
allows, :func:`context_span`) and pools the contextual tokens of the scene's own shots — its
output is the mean of the *scene's* shots + the residual over them, so step 0 is still exactly the
scene's mean. Such a window travels as one tensor (B, L, d + 2): the shot features, then two flags
per shot, "a real shot" (0 = padding, after the real shots) and "in the scene" (:func:`context_window`,
:func:`unpack`); a head tells it from a plain (B, n, d) window by its width.

On disk (train-scene-encoder's folder and the export): the backbone as any saved model folder
(``model.safetensors``, timm's ``config.json``, ``movies2scenes.json``, so ``local-dir:`` still loads
the single-frame backbone) plus ``temporal.safetensors`` and a ``temporal`` section in
``movies2scenes.json`` (:data:`TEMPORAL_FILE`, :func:`save_temporal`, :func:`load_temporal`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

TEMPORAL_FILE = "temporal.safetensors"


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


FLAGS = 2  # a context window's last columns: "a real shot", "in the scene"


def unpack(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(tokens, real, focus) of a window of ``dim``-d shot features: a packed context window's
    parts, or a plain window and None, None."""
    if x.shape[-1] == dim + FLAGS:
        return x[..., :dim], x[..., dim] > 0.5, x[..., dim + 1] > 0.5
    return x, None, None


def context_span(num_shots: int, lo: int, hi: int, context: int) -> tuple[int, int]:
    """[a, b): the shots of a movie of ``num_shots`` read around the scene's shots [lo, hi) — a
    window of ``context`` shots (at least the scene) as centred on the scene as the movie allows."""
    length = max(context, hi - lo)
    a = max(0, min(lo - (length - (hi - lo)) // 2, num_shots - length))
    return a, min(num_shots, a + length)


def context_window(rows, shots: Sequence[int], context: int, pad_to: int | None = None) -> np.ndarray:
    """(L, d + 2) float32: a clip (``shots``: its shots in the order it is read) in its movie's
    context — the movie's ``rows`` (its (N, d) shot features) around the clip's span
    [min(shots), max(shots)], the span replaced by the clip's shots in the clip's order (a shot of
    the span the clip leaves out is left out), flagged; padded with zero rows to ``pad_to``."""
    lo, hi = min(shots), max(shots) + 1
    a, b = context_span(len(rows), lo, hi, context)
    parts = [np.asarray(rows[a:lo], np.float32), np.asarray(rows[list(shots)], np.float32),
             np.asarray(rows[hi:b], np.float32)]
    x = np.concatenate(parts)
    flags = np.zeros((max(len(x), pad_to or 0), FLAGS), np.float32)
    flags[:len(x), 0] = 1
    flags[len(parts[0]):len(parts[0]) + len(shots), 1] = 1
    out = np.zeros((len(flags), x.shape[1]), np.float32)
    out[:len(x)] = x
    return np.hstack([out, flags])


def window_rows(rows, shots: Sequence[int], context: int = 0, pad_to: int | None = None) -> np.ndarray:
    """A clip's shots as a head reads them: their (n, d) rows in the clip's order (``context`` 0),
    or the clip in its movie's context (:func:`context_window`)."""
    if context:
        return context_window(rows, shots, context, pad_to)
    return np.asarray(rows[list(shots)], np.float32)


class TemporalHead(nn.Module):
    """Shot tokens (B, n, dim) → (B, dim): their mean + a zero-initialised residual read from
    *contextual tokens* (B, n, width) — each shot seen in its window — which a subclass computes.
    ``contextual`` can hide shots (``hide`` (B, n) True: the shot's input replaced by ``fill``, a
    (width,) vector): what masked shot modelling reads (models/pretext.py)."""

    def _zero_out(self, width: int, dim: int) -> None:
        """The residual's last projection, zero-initialised: step 0 is exactly the mean. Created
        last, after every randomly initialised layer (the seeded initial weights depend on it)."""
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.num_features, self.width = dim, width

    def inputs(self, tokens: torch.Tensor, hide: torch.Tensor | None, fill: torch.Tensor | None) -> torch.Tensor:
        x = self.inp(tokens)
        if hide is not None:
            x = torch.where(hide[..., None], fill.to(x.dtype).expand_as(x), x)
        return x

    def contextual(self, tokens, mask=None, hide=None, fill=None) -> torch.Tensor:
        raise NotImplementedError

    def residual(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(masked_mean(self.contextual(tokens, mask), mask))

    @property
    def context(self) -> int:
        """The context it was trained to read a scene in (shots; 0 = the scene alone)."""
        return int(self.settings.get("context", 0))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if tokens.ndim != 3:
            raise ValueError(f"{type(self).__name__} input must be (B, n, d) shot tokens, got {tuple(tokens.shape)}")
        tokens, real, focus = unpack(tokens, self.num_features)
        if focus is not None:  # a scene in its context: the scene's mean + the residual over its shots
            return masked_mean(tokens, focus) + self.out(masked_mean(self.contextual(tokens, real), focus))
        return masked_mean(tokens, mask) + self.residual(tokens, mask)


class TemporalResidual(TemporalHead):
    """The transformer head: timm ``Block``s over the shot tokens with a learned embedding of shot
    positions."""

    def __init__(self, dim: int, shots: int = 9, depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0,
                 width: int | None = None):
        super().__init__()
        # wide features (1280-d ImageNet) are read at ``width``: the transformer costs O(width²) per
        # shot; its zero-initialised output projection maps back to ``dim``, so step 0 is still the mean
        width = dim if width is None else min(width, dim)
        self.settings = {"dim": dim, "shots": shots, "depth": depth, "heads": heads, "mlp_ratio": mlp_ratio,
                         "width": width}
        self.inp = nn.Linear(dim, width) if width < dim else nn.Identity()
        heads = max(h for h in range(1, heads + 1) if width % h == 0)  # at most ``heads``, dividing width
        self.pos = nn.Parameter(torch.zeros(1, shots, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self._zero_out(width, dim)

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

    def contextual(self, tokens, mask=None, hide=None, fill=None) -> torch.Tensor:
        tokens = self.inputs(tokens, hide, fill)
        h = tokens + self.positions(tokens, mask)
        if mask is None:
            h = self.blocks(h)
        else:  # padded shots are not attended to (timm's Block takes attn_mask from 1.0.16 on)
            attn_mask = (mask[:, None, None, :]).expand(-1, 1, tokens.shape[1], -1)
            for blk in self.blocks:
                h = blk(h, attn_mask=attn_mask)
        return self.norm(h)


class GruResidual(TemporalHead):
    """The recurrent head (``factorised.head: gru``): a bidirectional GRU over the shot tokens (its
    order is its position code), ``depth`` layers, width/2 per direction."""

    def __init__(self, dim: int, shots: int = 9, depth: int = 1, width: int | None = None):
        super().__init__()
        width = dim if width is None else min(width, dim)
        width -= width % 2
        self.settings = {"head": "gru", "dim": dim, "shots": shots, "depth": depth, "width": width}
        self.inp = nn.Linear(dim, width) if width < dim else nn.Identity()
        self.gru = nn.GRU(width, width // 2, num_layers=depth, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(width)
        self._zero_out(width, dim)

    def contextual(self, tokens, mask=None, hide=None, fill=None) -> torch.Tensor:
        x = self.inputs(tokens, hide, fill)
        if mask is None:
            return self.norm(self.gru(x)[0])
        lengths = mask.sum(1).clamp(min=1).cpu()  # real shots first, then padding
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[1])
        return self.norm(h)


def temporal_head(head: str, dim: int, shots: int, depth: int, heads: int, mlp_ratio: float,
                  width: int | None, context: int = 0) -> TemporalHead:
    """The temporal head a config or a saved settings section names; ``context`` > 0: it reads a
    scene in a window of that many of its movie's shots (positions learned for them)."""
    shots = context or shots
    if head == "gru":
        model = GruResidual(dim, shots, depth, width)
    elif head == "transformer":
        model = TemporalResidual(dim, shots, depth, heads, mlp_ratio, width)
    else:
        raise ValueError(f"unknown temporal head {head!r} (transformer or gru)")
    if context:
        model.settings["context"] = int(context)
    return model


class FactorisedSceneEncoder(nn.Module):
    """(B, n, k, C, H, W) pixels → (B, d): ``backbone`` (any module mapping (N, C, H, W) to (N, d),
    e.g. a timm model with ``num_classes=0``) per frame, the mean of each shot's k frames as its
    token, then :class:`TemporalResidual`. ``freeze_backbone``: the backbone's weights do not train
    (and run without building a graph)."""

    def __init__(self, backbone: nn.Module, temporal: TemporalHead, input_size: int,
                 freeze_backbone: bool = True):
        super().__init__()
        self.backbone = backbone
        self.temporal = temporal
        self.input_size = input_size  # the backbone's eval view (short side and centre crop, px)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            backbone.requires_grad_(False)
        self.num_features = temporal.num_features
        self.alone = False  # True: read every scene alone, even where the head was trained in context

    @property
    def context(self) -> int:
        """The window of a scene's movie it reads the scene in (shots; 0 = alone — trained so, or
        ``alone`` set). A caller that has the whole movie uses :meth:`embed_in_movie` when > 0;
        ``forward`` on a bare scene always reads it alone."""
        return 0 if self.alone else self.temporal.context

    @torch.no_grad()
    def embed_in_movie(self, views: Sequence[torch.Tensor], clips: Sequence[Sequence[int]],
                       batch: int = 16) -> np.ndarray:
        """(len(clips), d) float32: each clip (its shots, in the order read) in its movie's context
        (:func:`context_window`); ``views``: every shot of the movie in shot order, each (k, 3, S, S)
        — each through the backbone once, however many windows hold it."""
        device = next(self.parameters()).device
        rows = torch.cat([self.shot_tokens(torch.stack(list(views[i:i + batch]))[None].to(device))[0]
                          for i in range(0, len(views), batch)]).float().cpu().numpy()
        windows = [context_window(rows, c, self.temporal.context) for c in clips]
        out = np.zeros((len(windows), self.num_features), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_length.setdefault(len(w), []).append(i)
        for idx in by_length.values():  # equal-length windows batch together
            for j in range(0, len(idx), batch):
                part = idx[j:j + batch]
                x = torch.from_numpy(np.stack([windows[i] for i in part])).to(device)
                out[part] = self.temporal(x).float().cpu().numpy()
        return out

    def shot_tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 6:
            raise ValueError(f"scene input must be (B, n, k, C, H, W), got {tuple(x.shape)}")
        b, n, k = x.shape[:3]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            f = self.backbone(x.flatten(0, 2))  # (B·n·k, d)
        return f.reshape(b, n, k, -1).mean(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.shot_tokens(x))


def save_temporal(temporal: TemporalHead, out_dir: str | Path) -> dict:
    """``temporal.safetensors`` (atomically) in ``out_dir``; returns the settings that rebuild it
    (the ``temporal`` section of movies2scenes.json)."""
    from safetensors.torch import save_file

    from ..store import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in temporal.state_dict().items()}
    with atomic_path(Path(out_dir) / TEMPORAL_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return dict(temporal.settings)


def load_temporal(path: str | Path, settings: dict) -> TemporalHead:
    """The temporal residual saved in folder ``path`` with its ``settings``, frozen, in eval mode;
    a settings section that does not match the weights is a ModelFileError naming both files."""
    from safetensors.torch import load_file

    from .weights import ModelFileError, shape_mismatches, weight_shapes

    path = Path(path)
    head = settings.get("head", "transformer") if isinstance(settings, dict) else None
    keys = ("dim", "shots", "depth", "width") + (("heads", "mlp_ratio") if head == "transformer" else ())
    if head not in ("transformer", "gru") or any(
            not isinstance(settings.get(k), (int, float)) or isinstance(settings.get(k), bool) for k in keys):
        raise ModelFileError(f"{path / 'movies2scenes.json'}: the temporal section needs a head (transformer or "
                             f"gru) and numbers {', '.join(keys)}; got {settings!r}")
    for key in keys:  # ranges, as a config's values are checked: no traceback from a bad number
        value, whole = settings[key], key != "mlp_ratio"
        if not math.isfinite(value) or value <= 0 or value > 1e6 or (whole and value != int(value)):
            raise ModelFileError(f"{path / 'movies2scenes.json'}: temporal.{key} must be a "
                                 f"{'whole number' if whole else 'number'} in (0, 1e6], got {value!r}")
    context = settings.get("context", 0)
    if not isinstance(context, int) or isinstance(context, bool) or not 0 <= context <= 1_000_000:
        raise ModelFileError(f"{path / 'movies2scenes.json'}: temporal.context must be a whole number ≥ 0 "
                             f"(shots of a scene's movie it reads; 0 = the scene alone), got {context!r}")
    if settings["width"] > settings["dim"]:
        raise ModelFileError(f"{path / 'movies2scenes.json'}: temporal.width {settings['width']} is larger than "
                             f"temporal.dim {settings['dim']} (a saved head is never wider than its features)")
    shapes = weight_shapes(path / TEMPORAL_FILE)
    layers = ({k.split(".")[1] for k in shapes if k.startswith("blocks.")} if head == "transformer"
              else {k.split("_l")[-1].split("_")[0] for k in shapes if k.startswith("gru.weight_ih_l")})
    if len(layers) != settings["depth"]:
        raise ModelFileError(f"{path / 'movies2scenes.json'}: temporal.depth {settings['depth']} but "
                             f"{path / TEMPORAL_FILE} holds {len(layers)} layers")
    args = (head, int(settings["dim"]), int(settings["shots"]), int(settings["depth"]), int(settings.get("heads", 1)),
            float(settings.get("mlp_ratio", 1.0)), int(settings["width"]), context)
    with torch.device("meta"):
        skeleton = temporal_head(*args)
    bad = shape_mismatches({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, shapes)
    if bad:
        raise ModelFileError(f"{path / 'movies2scenes.json'} does not match {path / TEMPORAL_FILE}: " + "; ".join(bad[:8]))
    model = temporal_head(*args)
    model.load_state_dict(load_file(str(path / TEMPORAL_FILE)))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def embed_windows(enc: TemporalHead, clips):
    """Embeddings of shot-feature clips of any length (each (n_i, d)), or of context windows
    (each (L_i, d + 2), :func:`context_window`)."""
    return np.stack([enc(torch.from_numpy(np.asarray(x, np.float32))[None])[0].numpy() for x in clips])


def clip_windows(movie_rows, clips, context: int = 0) -> list[np.ndarray]:
    """Each clip — (movie, start, end) or (movie, shots in order) — as the head reads it: its shots'
    rows alone (``context`` 0) or in its movie's context (:func:`context_window`); ``movie_rows``:
    movie → its (N, d) shot features."""
    from ..features import clip_shots

    return [window_rows(movie_rows(c[0]), clip_shots(c), context) for c in clips]
