"""Run by test_moco.py under torchrun: a few MoCo steps per rank on different data, then check that
every rank holds the same queue (and that it holds keys from both ranks)."""

import torch
import torch.distributed as dist

from movies2scenes.models.moco import MoCo
from test_moco import Flat

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)  # identical weights on every rank
model = torch.nn.parallel.DistributedDataParallel(
    MoCo(Flat(), dim=4, mlp_hidden=16, queue_size=20, momentum=0.9, temperature=0.2))
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
for step in range(4):  # 4 steps × 3 keys × 2 ranks = 24 keys: the 20-slot queue wraps
    batch = {k: torch.randn(3, 12, generator=gen) for k in ("query", "minus", "plus")}
    batch["has_minus"] = torch.tensor([True, True, False])
    batch["has_plus"] = torch.tensor([True, False, True])
    loss, _ = model(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
queue = model.module.queue
gathered = [torch.empty_like(queue) for _ in range(world)]
dist.all_gather(gathered, queue)
assert all(torch.equal(gathered[0], g) for g in gathered), "queues differ between ranks"
# the pointer moved by the keys of *both* ranks each step (without the gather it would be 12)
assert int(model.module.queue_ptr) == 24 % 20
if rank == 0:
    print(f"queues identical on {world} ranks")
dist.barrier()  # no rank tears gloo down while another is still in a collective (a rare abort seen under load)
dist.destroy_process_group()
