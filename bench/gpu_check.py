"""The GPU check (issue 31): every CUDA path of the pipeline run once on one GPU, PASS/FAIL and a
figure per path, in one command that finishes in minutes — ready for the moment a GPU is lent.

    python bench/gpu_check.py [--json OUT] [--only scene_step shot_step ...]   # on a CUDA machine (make gpu-check)
    python bench/gpu_check.py --cpu-smoke [--json OUT]                          # the same code on CPU, tiny (make test)

Paths (each a :class:`Check`):

* ``scene_step`` / ``scene_step_compiled`` — the paper's scene step: SceneViT ViT-B/16 at 128 px,
  9 shots × 1 frame, the MoCo pair loss, batch 128, bf16 autocast, fused AdamW, timm's SDPA
  attention; eager and under ``torch.compile``. Step time, images/s (query and key scenes), FLOPs
  counted with ``torch.utils.flop_counter`` (forward + backward + the key forward), **MFU** against
  the device's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`), memory peak. PASS: finite losses, and the
  compiled step's first loss equals the eager one's within bf16 tolerance.
* ``shot_step`` / ``shot_step_compiled`` — E_shot's step (Eq. 1: query, keys t−2 and t+2) the same way.
* ``extract`` — extract-shot-features' loader (``MovieChunks``: shard reads, JPEG decode, transforms,
  worker processes) feeding the model, shots/s, against the model alone on ready tensors.
* ``mining`` — ``mining.mine_pair`` on device tensors gives exactly the CPU's pairs; movie pairs/s.
* ``faiss`` — ``retrieval.search`` on the device (torch's exact search: PyPI has no faiss-gpu for
  CUDA 13) = faiss on the CPU, recall@10 of the flat index = 1.0 (cosine and L2); queries/s.
* ``transnet`` — TransNetV2 through our streaming detector on the device = on the CPU, the cuts of the
  real-footage trailer (testkit/footage.py); frames/s.
* ``gather`` — a 1-process NCCL group: ``moco.concat_all_gather`` and a raw ``all_gather``.
* ``decode`` — frames/s of our decoder on the trailer, one process and one per core.

``--cpu-smoke`` runs every path on CPU at tiny sizes — ``torch.compile`` with the CPU inductor
backend (the scene step; the shot step's graph is traced with ``aot_eager``: inductor's C++ build
takes minutes on 2 cores), bf16 autocast on CPU, fused AdamW on CPU, a gloo group, device = CPU
against CPU — so this file cannot rot between the sessions that are lent a GPU. Its figures mean
nothing. Exit status 1 if any path FAILs; 2 without a CUDA device unless ``--cpu-smoke``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from movies2scenes.config import ViTConfig  # noqa: E402
from movies2scenes.models.moco import MoCo  # noqa: E402
from movies2scenes.models.vit import create_scene_vit, create_vit  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets; matched on the
# device name in this order (the first key it contains)
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "GH200": 989.0,
    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


@dataclass
class Sizes:
    """One size for every path: FULL on a GPU, SMOKE on CPU in make test."""

    vit: ViTConfig
    moco_dim: int
    scene_shots: int  # also the mining window n
    scene_batch: int
    shot_batch: int
    queue: int
    mlp_hidden: int
    steps: int
    world: list[str]  # demo-world overrides for the extraction's shards
    keyframe_size: int
    extract_repeat: int  # the world's shards read this many times (the loader's real work, more of it)
    extract_batch: int
    mining_pairs: int
    mining_shots: tuple[int, int]
    feature_dim: int
    faiss_rows: int
    faiss_queries: int
    decode_processes: int


FULL = Sizes(vit=ViTConfig("vit_base_patch16_224", 128, 16), moco_dim=128, scene_shots=9, scene_batch=128, shot_batch=256,
             queue=65536, mlp_hidden=2048, steps=20, world=["demo_world.num_movies=12"], keyframe_size=128,
             extract_repeat=40, extract_batch=512, mining_pairs=200, mining_shots=(800, 2000), feature_dim=768,
             faiss_rows=200_000, faiss_queries=2_000, decode_processes=os.cpu_count() or 1)
SMOKE = Sizes(vit=ViTConfig("vit_tiny_patch16_224", 32, 8, embed_dim=48, depth=1, num_heads=3), moco_dim=16, scene_shots=3,
              scene_batch=2, shot_batch=4, queue=64, mlp_hidden=32, steps=2,
              world=[f"demo_world.{s}" for s in ("num_movies=4", "num_genres=2", "scenes_per_movie=[2, 3]",
                                                  "shots_per_scene=[3, 4]", "shot_frames=[8, 12]", "num_users=20")],
              keyframe_size=32, extract_repeat=2, extract_batch=16, mining_pairs=4, mining_shots=(20, 40),
              feature_dim=16, faiss_rows=2000, faiss_queries=50, decode_processes=2)


@dataclass
class Result:
    name: str
    status: str = "FAIL"  # PASS / FAIL
    figures: dict = field(default_factory=dict)
    summary: str = ""
    error: str = ""
    seconds: float = 0.0


class Check:
    """One path: ``run(sizes, device)`` returns (passed, figures, one-line summary)."""

    name = ""

    def __call__(self, sizes: Sizes, device: torch.device) -> Result:
        res, t = Result(self.name), time.perf_counter()
        try:
            passed, res.figures, res.summary = self.run(sizes, device)
            res.status = "PASS" if passed else "FAIL"
        except Exception as e:  # a path that breaks is a FAIL line, not the end of the check
            res.error = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            res.summary = res.error
            traceback.print_exc(file=sys.stderr)
        res.seconds = round(time.perf_counter() - t, 1)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return res

    def run(self, sizes: Sizes, device: torch.device) -> tuple[bool, dict, str]:
        raise NotImplementedError


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the training steps ------------------------------------------------------------------------------


class TrainStep(Check):
    """A MoCo step as the trainers run it: bf16 autocast, fused AdamW, timm's attention (SDPA)."""

    kind = "scene"  # or "shot"
    compiled = False

    def __init__(self, kind: str, compiled: bool, backend: str = "inductor"):
        self.kind, self.compiled, self.backend = kind, compiled, backend
        self.name = f"{kind}_step" + ("_compiled" if compiled else "")

    def model(self, sizes: Sizes, device: torch.device) -> MoCo:
        torch.manual_seed(0)
        backbone = create_scene_vit(sizes.vit) if self.kind == "scene" else create_vit(sizes.vit)
        return MoCo(backbone, sizes.moco_dim, sizes.mlp_hidden, sizes.queue, 0.999, 0.07).to(device)

    def batch(self, sizes: Sizes, device: torch.device) -> tuple[dict, int]:
        """The inputs (seeded) and the images one step reads."""
        g = torch.Generator().manual_seed(1)
        s = sizes.vit.img_size
        if self.kind == "scene":
            b, n = sizes.scene_batch, sizes.scene_shots
            x = {k: torch.randn(b, n, 1, 3, s, s, generator=g) for k in ("query", "key")}
            images = 2 * b * n
        else:
            b = sizes.shot_batch
            x = {k: torch.randn(b, 3, s, s, generator=g) for k in ("query", "minus", "plus")}
            x |= {"has_minus": torch.ones(b, dtype=torch.bool), "has_plus": torch.ones(b, dtype=torch.bool)}
            images = 3 * b
        return {k: v.to(device) for k, v in x.items()}, images

    def run(self, sizes, device):
        import timm.layers

        from torch.utils.flop_counter import FlopCounterMode

        model = self.model(sizes, device)
        x, images = self.batch(sizes, device)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.5e-4, fused=True)
        forward = torch.compile(model, backend=self.backend) if self.compiled else model  # as train-scene-encoder

        def step() -> float:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss, _ = forward(x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        t = time.perf_counter()
        first = float(step())  # eager: warm-up; compiled: the compilation
        sync(device)
        warm_s = time.perf_counter() - t
        step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t = time.perf_counter()
        losses = [step() for _ in range(sizes.steps)]
        sync(device)
        dt = (time.perf_counter() - t) / sizes.steps
        losses = [float(v) for v in losses]
        # FLOPs of one step (query forward + backward, key forward), counted on an eager copy
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss, _ = model(x)
            loss.backward()
        opt.zero_grad(set_to_none=True)
        flops = counter.get_total_flops()
        peak = peak_tflops(device)
        achieved = flops / dt / 1e12
        fig = {"step_ms": round(dt * 1e3, 2), "images_per_s": round(images / dt, 1), "tflops_per_step": flops / 1e12,
               "achieved_tflops": round(achieved, 2), "peak_tflops": peak,
               "mfu": round(achieved / peak, 4) if peak else None, "first_loss": first,
               "warmup_or_compile_s": round(warm_s, 1), "fused_attn": bool(timm.layers.use_fused_attn()),
               "memory_peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
               if device.type == "cuda" else None}
        finite = all(math.isfinite(v) for v in [first, *losses])
        passed = finite
        if self.compiled:  # the compiled step's first loss against an eager step on the same model and batch
            eager = TrainStep(self.kind, False)
            m2 = eager.model(sizes, device)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                ref, _ = m2(x)
            fig["eager_first_loss"] = float(ref)
            passed = finite and abs(float(ref) - first) <= 0.05 * max(1.0, abs(float(ref)))
        mfu = f", MFU {fig['mfu']:.1%} of {peak:.0f} TFLOP/s (target ≥ 40 %)" if peak else \
            (", MFU n/a (no peak known for this device)" if device.type == "cuda" else "")
        summary = (f"{fig['step_ms']:.1f} ms/step, {fig['images_per_s']:.0f} images/s, "
                   f"{fig['achieved_tflops']:.1f} TFLOP/s{mfu}, "
                   + (f"memory peak {fig['memory_peak_gib']} GiB, " if fig["memory_peak_gib"] is not None else "")
                   + (f"compile ({self.backend}) " if self.compiled else "warm-up ") + f"{warm_s:.1f} s, SDPA {fig['fused_attn']}"
                   + ("" if finite else ", NON-FINITE LOSS")
                   + (f", first loss {first:.4f} vs eager {fig['eager_first_loss']:.4f}" if self.compiled else ""))
        return passed, fig, summary


# -- extraction through the stage's loader -------------------------------------------------------------


class Extract(Check):
    name = "extract"

    def __init__(self, work: Path):
        self.work = work

    def shots(self, sizes: Sizes) -> Path:
        """A small demo world's shot shards at the paper's keyframe size (made once per work folder)."""
        run, world = self.work / "run", self.work / "world"
        cli = [sys.executable, "-m", "movies2scenes.cli"]
        if not (world / "world.json").is_file():
            subprocess.run([*cli, "demo-world", str(world), "-c", "configs/cpu-tiny.yaml", *sizes.world], cwd=ROOT,
                           check=True, stdout=subprocess.DEVNULL)
        if not (run / "shots" / "DONE.json").is_file():
            subprocess.run([*cli, "detect-shots", "-c", "configs/cpu-tiny.yaml", f"run_dir={run}",
                            f"catalogue={world / 'catalogue.csv'}", f"shots.keyframe_size={sizes.keyframe_size}"],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return run / "shots"

    def run(self, sizes, device):
        from torch.utils.data import DataLoader

        from movies2scenes.data import MovieChunks, loader_workers, movie_shots, shard_digests

        shots = self.shots(sizes)
        todo = [(m, shard) for m, (shard, _) in shard_digests(shots).items()] * sizes.extract_repeat
        n = sum(len(v) for v in movie_shots(shots).values()) * sizes.extract_repeat
        torch.manual_seed(0)
        model = create_vit(sizes.vit).to(device).eval()
        workers = loader_workers(min(8, os.cpu_count() or 1))

        def stage() -> int:
            seen = 0
            loader = DataLoader(MovieChunks(shots, todo, sizes.vit.img_size, sizes.extract_batch), batch_size=None,
                                num_workers=workers, pin_memory=device.type == "cuda")
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                for images, _ in loader:
                    seen += len(model(images.to(device, non_blocking=True)).float().cpu())
            return seen

        ready = [torch.randn(min(sizes.extract_batch, n - i), 3, sizes.vit.img_size, sizes.vit.img_size, device=device)
                 for i in range(0, n, sizes.extract_batch)]

        def pure() -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                for b in ready:
                    model(b).float().cpu()

        pure()  # warm-up
        t = time.perf_counter()
        seen = stage()
        t_stage = time.perf_counter() - t
        t = time.perf_counter()
        pure()
        t_pure = time.perf_counter() - t
        fig = {"shots": n, "stage_shots_per_s": round(n / t_stage, 1), "pure_shots_per_s": round(n / t_pure, 1),
               "ratio": round(t_pure / t_stage, 3), "loader_workers": workers}
        return seen == n, fig, (f"{n} shots through the loader ({workers} workers): {fig['stage_shots_per_s']:.0f} "
                                f"shots/s, model alone {fig['pure_shots_per_s']:.0f}, ratio {fig['ratio']:.2f} "
                                "(target ≥ 0.9)" + ("" if seen == n else f"; SAW {seen}"))


# -- mining, faiss, TransNetV2, the gather, decoding ----------------------------------------------------


class Mining(Check):
    name = "mining"

    def run(self, sizes, device):
        from movies2scenes.mining import mine_pair

        rng = np.random.default_rng(0)
        lo, hi = sizes.mining_shots
        pairs = [tuple(rng.standard_normal((int(rng.integers(lo, hi)), sizes.feature_dim)).astype(np.float16)
                       for _ in range(2)) for _ in range(sizes.mining_pairs)]  # stored features are fp16
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # what mining asks for: no TF32 on the window scores
        try:
            n = sizes.scene_shots
            cpu = [mine_pair(a, b, n, 0.5, "cpu") for a, b in pairs]
            on = [torch.as_tensor(a).to(device) for p in pairs for a in p]
            mine_pair(on[0], on[1], n, 0.5)  # warm-up
            sync(device)
            t = time.perf_counter()
            dev = [mine_pair(on[2 * i], on[2 * i + 1], n, 0.5) for i in range(len(pairs))]
            sync(device)
            dt = time.perf_counter() - t
        finally:
            torch.set_float32_matmul_precision(previous)
        same = sum(np.array_equal(c.start_a, d.start_a) and np.array_equal(c.start_b, d.start_b) for c, d in zip(cpu, dev))
        fig = {"pairs": len(pairs), "identical": int(same), "pairs_per_s": round(len(pairs) / dt, 1),
               "scene_pairs": int(sum(len(d) for d in dev))}
        return same == len(pairs), fig, (f"{same}/{len(pairs)} movie pairs mine the CPU's scene pairs exactly "
                                         f"({fig['scene_pairs']} kept), {fig['pairs_per_s']:.0f} movie pairs/s")


class Faiss(Check):
    """m2s search's exact search on the device (torch: faiss-gpu has no CUDA 13 build) = faiss-cpu."""

    name = "faiss"

    def run(self, sizes, device):
        from movies2scenes.retrieval import build_index, search

        rng = np.random.default_rng(0)
        db = rng.standard_normal((sizes.faiss_rows, sizes.feature_dim)).astype(np.float32)
        q = rng.standard_normal((sizes.faiss_queries, sizes.feature_dim)).astype(np.float32)
        index = build_index(db)
        search(index, q[:2], 10, device=device.type)  # warm-up (the index's copy to the device is in the timing)
        t = time.perf_counter()
        _, got = search(index, q, 10, device=device.type)
        dt = time.perf_counter() - t
        _, ref = search(index, q, 10, device="cpu")  # faiss-cpu
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)]))
        _, l2 = search(build_index(db, "l2"), q, 10, "l2", device=device.type)
        _, l2_ref = search(build_index(db, "l2"), q, 10, "l2", device="cpu")
        recall_l2 = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(l2, l2_ref)]))
        fig = {"rows": sizes.faiss_rows, "queries_per_s": round(len(q) / dt, 1), "recall_at_10": recall,
               "recall_at_10_l2": recall_l2}
        return recall == 1.0 and recall_l2 == 1.0, fig, (
            f"exact search on {device.type} vs faiss-cpu over {sizes.faiss_rows:,} rows: recall@10 {recall:.4f} "
            f"(cosine), {recall_l2:.4f} (L2), {fig['queries_per_s']:.0f} queries/s")


def trailer() -> tuple[str, int]:
    """The real-footage trailer's h264 file and its frame count."""
    from testkit import footage

    fx = footage.build()
    return fx["files"]["h264.mp4"], fx["truth"]["frames"]


class TransNet(Check):
    name = "transnet"

    @staticmethod
    def cuts(path: str, model) -> list[int]:
        from movies2scenes.shots import detect_shots
        from movies2scenes.transnet import TransNetDetector
        from movies2scenes.video import FrameReader, probe, scaled_size

        info = probe(path)
        size = scaled_size(info.width, info.height, 128)
        shots = detect_shots(iter(FrameReader(path, size)), info.fps, TransNetDetector(None, 4, model), 1, size,
                             512, 64, False, 4)
        return [s.start for s in shots]

    def run(self, sizes, device):
        from movies2scenes.transnet import load_model

        path, frames = trailer()
        ref = self.cuts(path, load_model("cpu"))
        model = load_model(device.type)
        self.cuts(path, model)  # warm-up (cuDNN autotuning)
        sync(device)
        t = time.perf_counter()
        got = self.cuts(path, model)
        dt = time.perf_counter() - t
        fig = {"frames": frames, "cuts": len(got), "cpu_cuts": len(ref), "frames_per_s": round(frames / dt, 1)}
        return got == ref, fig, (f"{len(got)} cuts on {device.type} {'=' if got == ref else '≠'} {len(ref)} on the CPU "
                                 f"(trailer, {frames} frames), {fig['frames_per_s']:.0f} frames/s (decode included)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gather(Check):
    name = "gather"

    def run(self, sizes, device):
        import torch.distributed as dist

        from movies2scenes.models.moco import concat_all_gather

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        try:
            x = torch.arange(12, dtype=torch.float32, device=device).reshape(3, 4)
            helper = concat_all_gather(x)
            out = [torch.empty_like(x)]
            dist.all_gather(out, x)  # the collective itself (the helper skips it in a world of one)
            sync(device)
            ok = torch.equal(helper, x) and torch.equal(out[0], x)
        finally:
            dist.destroy_process_group()
        return ok, {"backend": backend}, f"{backend} group of 1: concat_all_gather and all_gather give the input back: {ok}"


def _decode(path: str) -> int:
    from movies2scenes.video import FrameReader, probe, scaled_size

    info = probe(path)
    return sum(1 for _ in FrameReader(path, scaled_size(info.width, info.height, 128)))


class Decode(Check):
    name = "decode"

    def run(self, sizes, device):
        import multiprocessing

        path, frames = trailer()
        t = time.perf_counter()
        one = _decode(path)
        t_one = time.perf_counter() - t
        p = sizes.decode_processes
        with ProcessPoolExecutor(p, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_decode, [path] * p))  # the processes' start-up, outside the timing
            t = time.perf_counter()
            got = list(pool.map(_decode, [path] * (2 * p)))
            t_all = time.perf_counter() - t
        fig = {"frames": one, "one_process_fps": round(one / t_one, 1), "processes": p,
               "all_processes_fps": round(sum(got) / t_all, 1)}
        return one == frames and all(g == frames for g in got), fig, (
            f"{one} frames at 128 px: 1 process {fig['one_process_fps']:.0f} frames/s, {p} processes "
            f"{fig['all_processes_fps']:.0f} frames/s ({fig['all_processes_fps'] / fig['one_process_fps']:.1f}×)")


# -- the run -------------------------------------------------------------------------------------------


def checks(work: Path, smoke: bool) -> list[Check]:
    # on 2 CPU cores inductor's C++ compilation of a step takes minutes: the smoke compiles the scene
    # step with inductor and traces the shot step's graph (dynamo + AOT autograd) without code generation
    return [TrainStep("scene", False), TrainStep("scene", True), TrainStep("shot", False),
            TrainStep("shot", True, "aot_eager" if smoke else "inductor"),
            Extract(work), Mining(), Faiss(), TransNet(), Gather(), Decode()]


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "cpus": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        env |= {"device_name": torch.cuda.get_device_name(device), "capability": list(torch.cuda.get_device_capability(device)),
                "memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)}
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="every path on CPU at tiny sizes (seconds; make test)")
    ap.add_argument("--only", nargs="+", help="only these paths")
    ap.add_argument("--json", type=Path, help="write the results here (default: bench/_work/gpu_check.json)")
    args = ap.parse_args()
    if args.cpu_smoke:
        device, sizes = torch.device("cpu"), SMOKE
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); "
              "run `python bench/gpu_check.py --cpu-smoke` for the CPU version", file=sys.stderr)
        return 2
    else:
        device, sizes = torch.device("cuda"), FULL
        torch.backends.cuda.matmul.allow_tf32 = True  # as the trainers run (bf16 autocast; TF32 elsewhere)
    work = Path(tempfile.mkdtemp(prefix="m2s-gpu-check-"))
    todo = [c for c in checks(work, args.cpu_smoke) if not args.only or c.name in args.only]
    env = environment(device)
    print(f"gpu_check on {env.get('device_name', 'CPU (smoke sizes)')}: torch {env['torch']} (CUDA {env['cuda']}), "
          f"{env['cpus']} CPUs", flush=True)
    results = []
    started = time.perf_counter()
    try:
        for check in todo:
            r = check(sizes, device)
            results.append(r)
            print(f"{r.status} {r.name}: {r.summary} [{r.seconds:.0f} s]", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [r.name for r in results if r.status != "PASS"]
    print(f"gpu_check: {len(results) - len(failed)}/{len(results)} PASS in {time.perf_counter() - started:.0f} s"
          + (f"; FAIL: {', '.join(failed)}" if failed else ""))
    out = args.json or ROOT / "bench" / "_work" / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "smoke": args.cpu_smoke,
                               "results": [asdict(r) for r in results]}, indent=1))
    print(f"gpu_check: results → {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
