"""Knowledge-graph embeddings for the ``kg`` similarity source: TransE and RotatE, small and clear.

TransE (Bordes et al., 2013): a triple (h, r, t) is plausible when ``h + r ≈ t``;
distance ``‖h + r − t‖₁``, margin ranking loss against corrupted triples, entities kept on the unit
sphere. RotatE (Sun et al., 2019): entities are complex vectors and a relation is a rotation,
``h ∘ r ≈ t`` with ``|r_i| = 1``; loss ``−log σ(γ − d⁺) − log σ(d⁻ − γ)``. Negatives replace the head
or the tail by a uniformly drawn entity. Seeded; CPU is plenty for catalogue-sized graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .catalogue import CsvReader, open_text, utf8_problem
from .errors import CatalogueError


def _index(triples: list[tuple[str, str, str]]):
    entities = sorted({h for h, _, _ in triples} | {t for _, _, t in triples})
    relations = sorted({r for _, r, _ in triples})
    e_id = {e: i for i, e in enumerate(entities)}
    r_id = {r: i for i, r in enumerate(relations)}
    data = torch.tensor([[e_id[h], r_id[r], e_id[t]] for h, r, t in triples], dtype=torch.long)
    return entities, relations, data


def train_kg_embeddings(triples: list[tuple[str, str, str]], method: str = "transe", dim: int = 64,
                        epochs: int = 200, batch_size: int = 4096, lr: float = 0.01,
                        margin: float = 6.0, negatives: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Entity → embedding (float32; RotatE: real and imaginary parts concatenated)."""
    if method not in ("transe", "rotate"):
        raise ValueError(f"unknown KG method {method!r}; choose transe or rotate")
    if not triples:
        return {}
    gen = torch.Generator().manual_seed(seed)
    entities, relations, data = _index(triples)
    n_e, n_r = len(entities), len(relations)
    half = dim // 2
    scale = 6 / dim ** 0.5
    ent = torch.nn.Parameter((torch.rand(n_e, dim, generator=gen) * 2 - 1) * scale)
    if method == "transe":
        rel = torch.nn.Parameter((torch.rand(n_r, dim, generator=gen) * 2 - 1) * scale)
    else:
        rel = torch.nn.Parameter((torch.rand(n_r, half, generator=gen) * 2 - 1) * np.pi)  # phases
    opt = torch.optim.Adam([ent, rel], lr=lr)

    def distance(h, r, t):
        if method == "transe":
            return (ent[h] + rel[r] - ent[t]).abs().sum(-1)
        hr, hi = ent[h][..., :half], ent[h][..., half:]
        tr, ti = ent[t][..., :half], ent[t][..., half:]
        cr, ci = torch.cos(rel[r]), torch.sin(rel[r])
        return torch.sqrt((hr * cr - hi * ci - tr) ** 2 + (hr * ci + hi * cr - ti) ** 2 + 1e-9).sum(-1)

    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), batch_size):
            batch = data[order[start:start + batch_size]]
            h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
            rand = torch.randint(n_e, (len(batch), negatives), generator=gen)
            corrupt_head = torch.rand(len(batch), negatives, generator=gen) < 0.5
            hn = torch.where(corrupt_head, rand, h[:, None])
            tn = torch.where(corrupt_head, t[:, None], rand)
            pos = distance(h, r, t)
            neg = distance(hn, r[:, None].expand_as(hn), tn)
            if method == "transe":
                loss = F.relu(margin + pos[:, None] - neg).mean()
            else:
                loss = -(F.logsigmoid(margin - pos).mean() + F.logsigmoid(neg - margin).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if method == "transe":
                with torch.no_grad():
                    ent.data = F.normalize(ent.data, dim=1)
    vectors = ent.detach().numpy().astype(np.float32)
    return {e: vectors[i] for i, e in enumerate(entities)}


def read_triples(path: Path) -> list[tuple[str, str, str]]:
    """CSV with header head,relation,tail; every problem named by file and row."""
    if not path.is_file():
        raise CatalogueError([f"{path}: knowledge-graph triples file not found"])
    out, problems = [], []
    try:
        with open_text(path) as f:
            reader = CsvReader(path, f)
            lacking = [c for c in ("head", "relation", "tail") if c not in (reader.fieldnames or [])]
            if lacking:
                raise CatalogueError([f"{path}:1: header lacks column(s) {', '.join(lacking)}"])
            for row in reader:
                if None in row:
                    problems.append(f"{path}:{reader.line_num}: more fields than the header has")
                    continue
                h, r, t = (str(row[c] or "").strip() for c in ("head", "relation", "tail"))
                if not (h and r and t):
                    problems.append(f"{path}:{reader.line_num}: empty head, relation or tail")
                    continue
                out.append((h, r, t))
    except UnicodeDecodeError:
        raise CatalogueError([utf8_problem(path)]) from None
    if problems:
        raise CatalogueError(problems)
    return out
