"""Training-step and feature-extraction overheads, measured side by side in one run.

1. MoCo shot step (query fwd+bwd, key encoder on t−2 and t+2, momentum update, queue, Eq. 1 loss)
   vs the bare encoder's forward+backward on the same query batch; and vs the compute MoCo cannot
   avoid (bare fwd+bwd + the key encoder's no-grad forward on the neighbours), whose ratio is the
   cost of the method's machinery (target <= 1.15).
2. MoCo scene step (SceneViT on n shots: query fwd+bwd, key encoder on the partner scene, queue)
   vs the bare scene encoder's forward+backward, and vs bare + the key forward (target <= 1.15).
   Throughput and MFU on a GPU (ViT-B/16, 128 px, 9 shots, bf16; target MFU >= 40 %): bench/gpu_check.py.
3. Feature extraction (the stage's loader: shard reads, JPEG decode, transforms, workers) vs the
   pure model forward on ready tensors, in shots/s (target >= 0.9). Needs a finished demo run.

    python bench/train_step.py [--run runs/demo] [--arch demo|paper]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.config import load  # noqa: E402
from movies2scenes.models.moco import MoCo  # noqa: E402
from movies2scenes.models.folder import load_vit
from movies2scenes.models.folder import read_model_config  # noqa: E402
from movies2scenes.models.vit import create_scene_vit, create_vit  # noqa: E402


def timeit(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_step(cfg_file: str, batch: int, repeats: int) -> None:
    ecfg = load([ROOT / "configs" / cfg_file]).shot_encoder
    size = ecfg.model.img_size
    torch.manual_seed(0)
    model = MoCo(create_vit(ecfg.model), ecfg.moco.dim, ecfg.moco.mlp_hidden, ecfg.moco.queue_size,
                 ecfg.moco.momentum, ecfg.moco.temperature)
    x = {k: torch.randn(batch, 3, size, size) for k in ("query", "minus", "plus")}
    x["has_minus"] = torch.ones(batch, dtype=torch.bool)
    x["has_plus"] = torch.ones(batch, dtype=torch.bool)

    def moco_step():
        model.zero_grad(set_to_none=True)
        loss, _ = model(x)
        loss.backward()

    def bare():
        model.zero_grad(set_to_none=True)
        model.head_q(model.encoder_q(x["query"])).square().mean().backward()

    def bare_plus_keys():
        bare()
        with torch.no_grad():
            model.head_k(model.encoder_k(torch.cat([x["minus"], x["plus"]])))

    t_moco, t_bare, t_keys = (timeit(f, repeats) for f in (moco_step, bare, bare_plus_keys))
    print(f"{cfg_file} shot encoder ({ecfg.model.arch}, {size}px, batch {batch}, CPU threads "
          f"{torch.get_num_threads()}):")
    print(f"  MoCo step {t_moco * 1e3:8.1f} ms   bare fwd+bwd {t_bare * 1e3:8.1f} ms   "
          f"bare + key fwd {t_keys * 1e3:8.1f} ms")
    print(f"  MoCo ÷ bare fwd+bwd      = {t_moco / t_bare:.2f}  (includes 2 key-encoder forwards per query)")
    print(f"  MoCo ÷ (bare + key fwd)  = {t_moco / t_keys:.2f}  (the machinery; target <= 1.15)")


def bench_scene_step(cfg_file: str, batch: int, repeats: int, n: int = 9) -> None:
    sc = load([ROOT / "configs" / cfg_file]).scene_encoder
    size = sc.model.img_size
    torch.manual_seed(0)
    model = MoCo(create_scene_vit(sc.model), sc.moco.dim, sc.moco.mlp_hidden, sc.moco.queue_size,
                 sc.moco.momentum, sc.moco.temperature)
    x = {k: torch.randn(batch, n, 1, 3, size, size) for k in ("query", "key")}

    def moco_step():
        model.zero_grad(set_to_none=True)
        model(x)[0].backward()

    def bare():
        model.zero_grad(set_to_none=True)
        model.head_q(model.encoder_q(x["query"])).square().mean().backward()

    def bare_plus_key():
        bare()
        with torch.no_grad():
            model.head_k(model.encoder_k(x["key"]))

    t_moco, t_bare, t_key = (timeit(f, repeats) for f in (moco_step, bare, bare_plus_key))
    tokens = 1 + n * (size // sc.model.patch_size) ** 2
    print(f"{cfg_file} scene encoder ({sc.model.arch}, {size}px, {n} shots = {tokens} tokens, batch {batch}, "
          f"CPU threads {torch.get_num_threads()}):")
    print(f"  MoCo step {t_moco * 1e3:8.1f} ms   bare fwd+bwd {t_bare * 1e3:8.1f} ms   "
          f"bare + key fwd {t_key * 1e3:8.1f} ms")
    print(f"  MoCo ÷ bare fwd+bwd      = {t_moco / t_bare:.2f}  (includes the key encoder's forward)")
    print(f"  MoCo ÷ (bare + key fwd)  = {t_moco / t_key:.2f}  (the machinery; target <= 1.15)")


def bench_extract(run: Path, repeats: int) -> None:
    from torch.utils.data import DataLoader

    from movies2scenes.data import MovieChunks, movie_shots, shard_digests

    if not (run / "shot_encoder" / "DONE.json").is_file():
        print(f"feature extraction: skipped ({run} has no trained shot encoder; run `make demo`)")
        return
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"])
    model = load_vit(run / "shot_encoder")
    size = read_model_config(run / "shot_encoder")["vit"]["img_size"]
    todo = [(movie, shard) for movie, (shard, _) in shard_digests(run / "shots").items()]  # what the stage reads
    n = sum(len(v) for v in movie_shots(run / "shots").values())
    fc = cfg.shot_features

    def stage():
        loader = DataLoader(MovieChunks(run / "shots", todo, size, fc.batch_size), batch_size=None,
                            num_workers=fc.num_workers)
        with torch.inference_mode():
            for images, _ in loader:
                model(images)

    def loader_only():
        for _ in DataLoader(MovieChunks(run / "shots", todo, size, fc.batch_size), batch_size=None,
                            num_workers=0):
            pass

    ready = [torch.randn(min(fc.batch_size, n - i), 3, size, size) for i in range(0, n, fc.batch_size)]

    def pure():
        with torch.inference_mode():
            for b in ready:
                model(b)

    t_stage, t_pure, t_load = (timeit(f, repeats, 1) for f in (stage, pure, loader_only))
    print(f"feature extraction over {n} shots ({len(todo)} movies, batch {fc.batch_size}, "
          f"{fc.num_workers} loader worker(s)):")
    print(f"  stage {n / t_stage:8.0f} shots/s   pure forward {n / t_pure:8.0f} shots/s   "
          f"ratio {t_pure / t_stage:.2f} (target >= 0.9)")
    print(f"  loader alone (1 process, no model) {n / t_load:8.0f} shots/s = {t_pure / t_load:.1f}× "
          "what the model consumes; on this 2-core machine loader and model share the cores")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="cpu-tiny.yaml steps at batch 4 and the extraction of --run, "
                    "once (seconds; make test runs it on a tiny run)")
    ap.add_argument("--only-extract", action="store_true", help="only the feature-extraction ratio (on --run)")
    args = ap.parse_args()
    if args.only_extract:
        bench_extract(args.run, max(2, args.repeats // 2))
        return 0
    if args.smoke:
        bench_step("cpu-tiny.yaml", 4, 1)
        bench_scene_step("cpu-tiny.yaml", 2, 1)
        bench_extract(args.run, 1)
        return 0
    bench_step("cpu-tiny.yaml", 64, args.repeats)
    bench_step("paper.yaml", 8, max(2, args.repeats // 2))
    bench_scene_step("cpu-tiny.yaml", 32, args.repeats)
    bench_scene_step("paper.yaml", 2, max(2, args.repeats // 2))
    bench_extract(args.run, max(2, args.repeats // 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
