"""Timing, memory and training-throughput measurements."""

import statistics
import threading
import time
from typing import Callable, Dict, List

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], repeats: int, warmup: int, device: str = "cpu") -> Dict[str, float]:
    """Median and spread (25th/75th percentile, min) of ``fn``'s wall time in seconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median": statistics.median(times), "p25": q[0], "p75": q[2], "min": times[0], "n": len(times)}


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc), so RSS growth shows the block's real peak
    instead of being hidden by pages kept from earlier allocations."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak memory above the starting level while the block runs: CUDA allocator peak on a GPU,
    else the growth of the process RSS (sampled every millisecond) after returning free heap
    pages to the OS: the memory the block itself needed, to page granularity."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        import gc

        gc.collect()
        _release_free_memory()
        self._start = _rss_bytes()
        self._peak = self._start
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, _rss_bytes())
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._start
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss_bytes()) - self._start
        return False


def train_steps(codec: torch.nn.Module, batches: List[torch.Tensor], lr: float = 1e-3,
                device: str = "cpu", on_step: Callable[[int, Dict], None] = None) -> List[float]:
    """Generator + discriminator steps (as ESPnet's GAN trainer, generator first) over
    ``batches`` of ``(B, T)`` audio; returns the wall time of each step."""
    trainer = BudgetTrainer(codec, lr=lr, device=device)
    codec.train()
    times = []
    for i, audio in enumerate(batches):
        t0 = time.perf_counter()
        stats = trainer.step(audio)
        sync(device)
        times.append(time.perf_counter() - t0)
        if on_step:
            on_step(i, stats)
    codec.eval()
    return times


class BudgetTrainer:
    """G + D steps (as ESPnet's GAN trainer, generator first) for a budget of *CPU time*.

    ``run(cpu_seconds, next_batch)`` trains on batches from ``next_batch()`` until this process
    has used ``cpu_seconds`` more CPU time (``time.process_time``: all its threads; on an idle
    machine that is wall time x threads in use, and unlike wall time it is not inflated when
    other jobs share the CPU). Optimizer state persists across calls, so a budget can be spent
    in chunks with evaluations in between that do not count. Only parameters with
    ``requires_grad`` train (:meth:`reset_optimizers` after freezing some).
    """

    def __init__(self, codec: torch.nn.Module, lr: float = 5e-4, device: str = "cpu"):
        self.codec, self.device, self.lr = codec, device, lr
        self.reset_optimizers()
        self.steps = 0
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def reset_optimizers(self) -> None:
        """Fresh optimizers over the parameters that train now (call after freezing some, e.g.
        for a second training stage); the step and time counters go on."""
        self.opt_g = torch.optim.Adam([p for p in self.codec.generator.parameters() if p.requires_grad],
                                      lr=self.lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.codec.discriminator.parameters(), lr=self.lr, betas=(0.5, 0.9))

    def step(self, audio: torch.Tensor) -> Dict[str, float]:
        """One generator then discriminator update on ``audio`` ``(B, T)``; their stats merged."""
        audio = audio.to(self.device)
        stats = {}
        for opt, gen_turn in ((self.opt_g, True), (self.opt_d, False)):
            out = self.codec(audio, forward_generator=gen_turn)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            stats.update({k: float(v) for k, v in out["stats"].items()})
        return stats

    def run(self, cpu_seconds: float, next_batch: Callable[[], torch.Tensor]) -> Dict[str, float]:
        """Train for ``cpu_seconds``; returns the mean of the generator/discriminator stats."""
        self.codec.train()
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        totals, n = {}, 0
        while time.process_time() - t_cpu < cpu_seconds:
            for k, v in self.step(next_batch()).items():
                totals[k] = totals.get(k, 0.0) + v
            n += 1
        sync(self.device)
        self.steps += n
        self.cpu_s += time.process_time() - t_cpu
        self.wall_s += time.perf_counter() - t_wall
        self.codec.eval()
        return {k: v / max(n, 1) for k, v in totals.items()}
