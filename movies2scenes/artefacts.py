"""Readers of what stages wrote: the stored shot samples of a movie (``shots/``) and the movie
encoder's per-shot embeddings of whole movies (``movie_encoder/`` over ``shot_features/``)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from .data import ShardCache
from .features import ShotFeatures
from .integrity import verified
from .models.movie import checked_movie_config, load_movie_encoder


class MovieEmbeddings:
    """E_movie-without-last-FC shot embeddings of whole movies (standardised as in training), with a
    small LRU cache: units list pairs sorted by movie, so a movie is embedded about once per unit."""

    def __init__(self, feats: ShotFeatures, enc_dir: Path, device: torch.device, cache: int = 16):
        c = checked_movie_config(enc_dir)
        self.mean = np.asarray(c["feature_mean"], np.float32)
        self.std = np.asarray(c["feature_std"], np.float32)
        self.model = load_movie_encoder(enc_dir, device)
        self.feats, self.device, self.size = feats, device, cache
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def __call__(self, movie_id: str) -> torch.Tensor:
        if movie_id in self.cache:
            self.cache.move_to_end(movie_id)
            return self.cache[movie_id]
        x = (np.asarray(self.feats.movie(movie_id), np.float32) - self.mean) / self.std
        e = self.model.shot_embeddings(torch.from_numpy(x).to(self.device)).float()
        self.cache[movie_id] = e
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return e


class ShotSamples:
    """Stored shot samples (keyframe fields) of a movie in shot order, from its shot shard (read
    sequentially and cached by ``data.ShardCache``)."""

    def __init__(self, shots_dir: Path, cache: int = 8):
        index = pq.read_table(verified(shots_dir / "index.parquet"), columns=["movie_id", "shard"]).to_pylist()
        self.shard = {r["movie_id"]: r["shard"] for r in index}
        self.cache = ShardCache(shots_dir, cache)

    def __call__(self, movie_id: str) -> list[dict[str, bytes]]:
        samples = list(self.cache.shard(self.shard[movie_id]).values())
        for i, s in enumerate(samples):
            if json.loads(s["json"])["shot"] != i:
                raise ValueError(f"{self.shard[movie_id]}: shot {i} out of order")
        return samples
