"""One runtime-setup function: reads torchrun's environment, picks the device and
the process-group backend (nccl on GPUs, gloo on CPUs), seeds, and says which
rank logs and saves.

    single process:  smim train ...
    several GPUs:    torchrun --standalone --nproc_per_node 4 -m sentencemim.cli train ...
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum numbers over ranks (float64 on the device)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """--device: auto, cpu, cuda, cuda:N; a missing or unknown GPU is the user's error, one line."""
    from .errors import UserError
    try:
        device = pick_device(str(name), local_rank)
    except RuntimeError as e:
        raise UserError(f"--device {name!r}: {str(e).splitlines()[0]}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name!r}: no CUDA GPU is available here (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                            f"numbered from 0")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"--device {name!r}: no Apple MPS device is available here (use cpu or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name!r}: unsupported device type; use auto, cpu, cuda or cuda:N")
    return device


def setup(device: str = "auto", seed: int = 0) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # torch.distributed.nn.functional takes group.WORLD as a default argument, so if it is
        # first imported after the group exists (DDP's constructor imports it, through
        # torch._dynamo) it holds the group for good: destroy_process_group then cannot free
        # it, its gloo threads outlive teardown, and now and then they abort the process at
        # exit ("terminate called without an active exception"). Imported first, it holds None.
        importlib.import_module("torch.distributed.nn")  # (`import torch.x` here would make torch local)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    torch.manual_seed(seed)  # the same initial weights on every rank
    return Runtime(rank, world, local, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def available_memory(device: torch.device) -> int | None:
    """Bytes of memory free for a new allocation on `device` (None if unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_model_fits(model_cfg, optimizer: str, device: torch.device) -> None:
    """Refuse, in one line, a model whose weights, gradients and optimizer state alone exceed
    the free memory of `device` (counted on the meta device: nothing is allocated)."""
    from .errors import UserError
    from .model import SentenceAE
    with torch.device("meta"):
        n = sum(p.numel() for p in SentenceAE(model_cfg).parameters())
    need = n * 4 * (4 if optimizer == "adam" else 3)  # float32 weights, gradients, optimizer moments
    free = available_memory(device)
    if free is not None and need > free:
        raise UserError(f"the model has {n / 1e6:,.1f}M parameters: its weights, gradients and {optimizer} state "
                        f"need {need / 2**30:,.1f} GiB, more than the {free / 2**30:,.1f} GiB free on {device}; "
                        "choose a smaller --hidden-dim / --embedding-dim / --latent-dim / --max-vocab")
