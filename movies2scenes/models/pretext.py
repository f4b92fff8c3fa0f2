"""Training terms for the factorised scene encoder's temporal head, beside the paper's pair loss.

A MoCo loss on mined pairs of *similar scenes* is almost satisfied by the mean of their shot
features — which the factorised encoder already is at step 0 — so its residual receives little
signal that only the order or the context of shots carries. Each term here gives it one, on the
query windows of shot features the pair loss already reads (frozen backbone), and each has a
weight in ``scene_encoder.factorised`` (0 = off; all 0 is the paper's pair loss alone):

* **masked shot modelling** (``msm``; LV-MAE's masked embedding modelling on frozen clip features,
  BaSSL's MSM): a fraction ``mask_ratio`` of each window's shots is hidden — its input replaced by
  a learned fill vector *before* the temporal head, so nothing of it reaches any position — and a
  light decoder predicts the hidden shots' features from the contextual tokens (cosine, or MSE on
  layer-normalised targets as MAE's normalised-pixel loss);
* **order negatives** (``order_negatives``; Test of Time): the query's own window shuffled and
  reversed, through the key encoder, as negatives against the pair's positive — an InfoNCE over
  [positive, shuffled, reversed] of its own, so its weight is a knob; a reordering equal to the
  window (one shot, or identical shots) is left out, never a negative equal to the query. With the
  pair loss off (``pairs: 0``, a pairs-free encoder) the positive is the window itself through the
  key encoder;
* **pseudo-boundary prediction** (``boundary``; BaSSL's pseudo-boundary task): the window's most
  dissimilar pair of neighbouring shots (lowest cosine) marks its pseudo boundary; a linear head
  over each gap's two contextual tokens predicts which gap it is.

The decoder, the fill vector and the boundary head train with the encoder and are checkpointed with
the MoCo model; the export holds the temporal head alone. Random masks and shuffles come from
torch's global generator, which a resumed run restores (Accelerate's random states).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .factorised import unpack
from .moco import MoCo, topk_accuracy


class PretextTerms(nn.Module):
    """The three terms' own parameters and losses for a temporal head of ``width`` over ``dim``-d
    shot features."""

    def __init__(self, width: int, dim: int, msm: float = 0.0, mask_ratio: float = 0.4, msm_loss: str = "cosine",
                 order_negatives: float = 0.0, boundary: float = 0.0, pairs: float = 1.0):
        super().__init__()
        self.weights = {"pairs": float(pairs), "msm": float(msm), "order": float(order_negatives),
                        "boundary": float(boundary)}
        self.mask_ratio, self.msm_kind = float(mask_ratio), msm_loss
        if msm:
            self.fill = nn.Parameter(torch.zeros(width))
            nn.init.trunc_normal_(self.fill, std=0.02)
            self.decoder = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, dim))
        if boundary:
            self.boundary_head = nn.Linear(2 * width, 1)

    def hidden(self, b: int, n: int, device, real: torch.Tensor | None = None) -> torch.Tensor:
        """(b, n) True where a shot is hidden: round(mask_ratio · m) of each window's m real shots
        (``real`` (b, n); all n when None), at least one and at most m − 1, drawn uniformly."""
        if real is None:
            real = torch.ones(b, n, dtype=torch.bool, device=device)
        m = real.sum(1)
        k = torch.minimum(m - 1, torch.clamp((self.mask_ratio * m.double()).round().long(), min=1))
        draw = torch.rand(b, n, device=device).masked_fill(~real, 2.0)  # padding ranks last
        return draw.argsort(1).argsort(1) < k[:, None]

    def masked_shot_loss(self, encoder, windows: torch.Tensor) -> torch.Tensor:
        tokens, real, _ = unpack(windows, encoder.num_features)
        hide = self.hidden(*tokens.shape[:2], tokens.device, real)
        pred = self.decoder(encoder.contextual(tokens, real, hide=hide, fill=self.fill))[hide]
        target = tokens.detach()[hide]
        if self.msm_kind == "mse":
            return F.mse_loss(pred.float(), F.layer_norm(target.float(), target.shape[-1:]))
        return (1 - F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()

    def boundary_loss(self, encoder, windows: torch.Tensor) -> torch.Tensor:
        """Over the scene's own shots (in a context window: its n flagged shots, read in context)."""
        tokens, real, focus = unpack(windows, encoder.num_features)
        h = encoder.contextual(tokens, real)
        if focus is not None:
            b = len(tokens)
            tokens, h = tokens[focus].view(b, -1, tokens.shape[-1]), h[focus].view(b, -1, h.shape[-1])
        x = F.normalize(tokens.detach().float(), dim=-1)
        target = (x[:, :-1] * x[:, 1:]).sum(-1).argmin(1)  # the gap after shot i: its neighbours least alike
        logits = self.boundary_head(torch.cat([h[:, :-1], h[:, 1:]], -1)).squeeze(-1)  # (B, n − 1)
        return F.cross_entropy(logits.float(), target)

    @staticmethod
    def reorderings(windows: torch.Tensor, dim: int | None = None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each window's scene shuffled (a uniformly drawn order other than its own where n > 1;
        from ``generator``, else the global one) and reversed: the whole window, or in a context
        window (``dim``-d features + flags) the scene's n flagged shots only, in place, the context
        around them unchanged."""
        b = len(windows)
        _, _, focus = unpack(windows, windows.shape[-1] if dim is None else dim)
        if focus is None:
            at = torch.arange(windows.shape[1], device=windows.device).expand(b, -1)
        else:
            at = focus.nonzero()[:, 1].view(b, -1)  # (b, n) the scene's positions, in order
        n = at.shape[1]
        order = (torch.rand(b, n, generator=generator) if generator is not None
                 else torch.rand(b, n, device=windows.device)).to(windows.device).argsort(1)
        same = (order == torch.arange(n, device=windows.device)).all(1)
        order[same] = order[same].roll(1, dims=1)  # the identity drawn: shift it by one
        backwards = torch.arange(n - 1, -1, -1, device=windows.device).expand(b, -1)
        return PretextTerms.reorder(windows, at, order), PretextTerms.reorder(windows, at, backwards)

    @staticmethod
    def reorder(windows: torch.Tensor, at: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """``windows`` with the rows at positions ``at`` (b, n) put in ``order`` (b, n) among themselves."""
        wide = lambda i: i[..., None].expand(-1, -1, windows.shape[-1])  # noqa: E731
        return windows.scatter(1, wide(at), windows.gather(1, wide(at.gather(1, order))))

    def order_loss(self, moco: MoCo, windows: torch.Tensor, q: torch.Tensor, l_pos: torch.Tensor) -> torch.Tensor:
        """InfoNCE of each query's positive logit against its own window reordered (key encoder)."""
        logits, valid = [l_pos], [torch.ones_like(l_pos, dtype=torch.bool)]
        for other in self.reorderings(windows, moco.encoder_q.num_features):
            differs = (other != windows).flatten(1).any(1)
            with torch.no_grad():
                k = moco.embed_key(other).to(q.dtype)
            logits.append((q * k).sum(-1))
            valid.append(differs)
        logits, valid = torch.stack(logits, 1), torch.stack(valid, 1)
        rows = valid[:, 1:].any(1)
        if not bool(rows.any()):
            return q.sum() * 0.0
        logits = logits.masked_fill(~valid, float("-inf"))[rows] / moco.temperature
        return F.cross_entropy(logits.float(), torch.zeros(len(logits), dtype=torch.long, device=logits.device))


class PretextMoCo(MoCo):
    """The pair form of :class:`MoCo` plus :class:`PretextTerms` on the query windows: loss =
    pairs · pair loss + Σ weight · term. Stats add each term's loss (and the pair loss alone)."""

    def __init__(self, backbone: nn.Module, terms: PretextTerms, *args, **kwargs):
        super().__init__(backbone, *args, **kwargs)
        self.terms = terms

    def forward(self, batch: dict[str, torch.Tensor]):
        query = batch["query"]
        keys = batch["key"][None]
        valid = torch.ones(1, len(query), dtype=torch.bool, device=query.device)
        q = self.embed_query(query)
        pair, logits, _ = self.contrast_embedded(q, keys, valid)  # the queue advances either way
        stats = topk_accuracy(logits) | {"pair_loss": pair.detach()}
        w = self.terms.weights
        loss = w["pairs"] * pair
        if w["msm"]:
            term = self.terms.masked_shot_loss(self.encoder_q, query)
            loss, stats["msm_loss"] = loss + w["msm"] * term, term.detach()
        if w["order"]:
            if w["pairs"]:  # the pair's positive against the query's reorderings
                l_pos = logits[:, 0] * self.temperature
            else:  # pairs-free: the window itself (key encoder) against its reorderings
                with torch.no_grad():
                    l_pos_key = self.embed_key(query).to(q.dtype)
                l_pos = (q * l_pos_key).sum(-1)
            term = self.terms.order_loss(self, query, q, l_pos)
            loss, stats["order_loss"] = loss + w["order"] * term, term.detach()
        if w["boundary"]:
            term = self.terms.boundary_loss(self.encoder_q, query)
            loss, stats["boundary_loss"] = loss + w["boundary"] * term, term.detach()
        return loss, stats
