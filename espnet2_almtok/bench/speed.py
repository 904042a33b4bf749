"""Speed table: encode / decode time and peak memory against audio length, and batch throughput.

Systems: the paper-size ALMTokenizer (generator only, long audio in Transformer windows of its
training crop) and ESPnet's SoundStream, Encodec and DAC at their default sizes (their
constructors' defaults, 24 kHz); ``quick`` swaps in the tiny configs for a smoke run.

Every (system, length) point and every throughput run is measured in a fresh process
(``python -m espnet2_almtok.bench.speed '<json spec>'``): its peak memory is its own, and a run
that outgrows ``max_rss_gb`` is stopped by the parent (by its pid) and recorded as such instead
of exhausting the machine. Peak memory is the growth of the process's memory while the call runs
(RSS on a CPU, the CUDA allocator's peak on a GPU), the model and the input excluded.
"""

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[2]
ESPNET_CODECS = ("soundstream", "encodec", "dac")


def system_specs(quick: bool) -> Dict[str, Dict]:
    """name -> how to build it: the paper ALMTokenizer and ESPnet's codecs at their default sizes
    (``quick``: the debug ALMTokenizer and the benchmark's small ESPnet configs)."""
    if quick:
        specs = {"almtok": {"kind": "almtok", "config": str(ROOT / "conf/tuning/train_almtok_debug.yaml")}}
        specs.update({n: {"kind": n, "config": str(ROOT / f"conf/benchmark/{n}.yaml")} for n in ESPNET_CODECS})
        return specs
    specs = {"almtok": {"kind": "almtok", "config": str(ROOT / "conf/tuning/train_almtok_paper.yaml")}}
    specs.update({n: {"kind": n, "config": None} for n in ESPNET_CODECS})
    # ESPnet 202511's Encodec() does not build with its own defaults (its discriminator_params lack
    # the msstft_discriminator_params level): its default discriminator, nested as it expects. The
    # generator, which is what is timed, keeps every default (the discriminator is deleted anyway).
    specs["encodec"]["conf"] = {"discriminator_params": {"msstft_discriminator_params": ENCODEC_DEFAULT_MSSTFT}}
    return specs


ENCODEC_DEFAULT_MSSTFT = {  # espnet2.gan_codec.encodec.Encodec's default discriminator_params
    "filters": 32, "in_channels": 1, "out_channels": 1, "sep_channels": False, "norm": "weight_norm",
    "n_ffts": [1024, 2048, 512, 256, 128], "hop_lengths": [256, 512, 128, 64, 32],
    "win_lengths": [1024, 2048, 512, 256, 128], "activation": "LeakyReLU",
    "activation_params": {"negative_slope": 0.3}}


def test_signal(seconds: float, fs: int, seed: int = 0) -> torch.Tensor:
    """``(T,)`` a harmonic tone with a wandering pitch plus a little noise (speech-like spectrum)."""
    g = torch.Generator().manual_seed(seed)
    n = int(round(seconds * fs))
    t = torch.arange(n, dtype=torch.float64) / fs
    f0 = 140 + 40 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / fs
    wav = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.15
    return (wav.float() + 0.01 * torch.randn(n, generator=g)).contiguous()


class SpeedSystem:
    """``encode(wav (T,)) -> codes``, ``decode(codes) -> wav``; ``stream(wav)`` (ALMTokenizer)
    codes and resynthesises block by block as the inference CLI does, keeping nothing."""

    def __init__(self, name: str, spec: Dict, device: str, dtype: str = "float32", window: int = 4):
        self.name, self.device, self.window = name, device, window
        if spec["kind"] == "almtok":
            from espnet2_almtok.api import ALMTokenizer

            self.tok = ALMTokenizer.from_config(spec["config"], use_priors=False, dtype=dtype).to(device)
            self.fs = self.tok.sample_rate
            self.params = self.tok.num_parameters
            self.setting = f"w={window}, context {self.tok.chunking.context_s:g} s"
        else:
            import yaml

            from espnet2_almtok.startup import import_quietly

            codec_choices = import_quietly("espnet2_almtok.tasks.codec").codec_choices
            conf = yaml.safe_load(Path(spec["config"]).read_text())["codec_conf"] if spec["config"] \
                else dict(spec.get("conf", {}))
            codec = codec_choices.get_class(spec["kind"])(**conf)
            del codec.discriminator  # inference needs the generator only
            self.codec = codec.to(device).eval()
            self.tok = None
            self.fs = int(conf.get("sampling_rate", 24000))
            self.params = sum(p.numel() for p in self.codec.parameters())
            self.setting = "default bandwidth"

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor):
        if self.tok is not None:
            return self.tok.encode(wav.to(self.device), self.fs, window=self.window)
        return self.codec.encode(wav.to(self.device).view(1, 1, -1))

    @torch.inference_mode()
    def decode(self, codes):
        if self.tok is not None:
            return self.tok.decode(codes, window=self.window)
        return self.codec.decode(codes)

    @torch.inference_mode()
    def stream(self, wav: torch.Tensor) -> None:
        from espnet2_almtok.codec.sources import TensorSource

        codes = self.tok.encode_source(TensorSource(wav), window=self.window)
        for _ in self.tok.decode_blocks(codes, window=self.window):
            pass

    @torch.inference_mode()
    def batch(self, clips: List[torch.Tensor]) -> None:
        """Encode and decode ``clips`` as one padded batch."""
        if self.tok is not None:
            self.decode(self.tok.encode([c.to(self.device) for c in clips], self.fs, window=self.window))
            return
        x = torch.zeros(len(clips), 1, max(c.numel() for c in clips), device=self.device)
        for i, c in enumerate(clips):
            x[i, 0, : c.numel()] = c
        self.codec.decode(self.codec.encode(x))


def measure_point(system: SpeedSystem, seconds: float, repeats: int, warmup: int) -> Dict:
    """Encode and decode time (median of ``repeats``) and peak memory for one clip."""
    from espnet2_almtok.bench.measure import PeakMemory, timeit

    wav = test_signal(seconds, system.fs)
    stream_mb = None
    if system.tok is not None:  # first, before the whole-clip calls fragment the heap
        system.stream(test_signal(min(seconds, 2.0), system.fs, seed=1))  # warm-up
        with PeakMemory(system.device) as mem_stream:
            system.stream(wav)
        stream_mb = mem_stream.peak_bytes / 2 ** 20
    codes = system.encode(wav)
    enc = timeit(lambda: system.encode(wav), repeats, warmup, system.device)
    dec = timeit(lambda: system.decode(codes), repeats, warmup, system.device)
    with PeakMemory(system.device) as mem_enc:
        system.encode(wav)
    with PeakMemory(system.device) as mem_dec:
        system.decode(codes)
    out = {"seconds": seconds, "encode_s": enc["median"], "decode_s": dec["median"], "repeats": repeats,
           "encode_s_per_audio_s": enc["median"] / seconds, "decode_s_per_audio_s": dec["median"] / seconds,
           "peak_encode_mb": mem_enc.peak_bytes / 2 ** 20, "peak_decode_mb": mem_dec.peak_bytes / 2 ** 20}
    if stream_mb is not None:
        out["peak_stream_mb"] = stream_mb
    return out


def measure_throughput(system: SpeedSystem, n_files: int, min_s: float, max_s: float, batch_size: int,
                       seed: int = 0) -> Dict:
    """Audio seconds coded and resynthesised per wall second over ``n_files`` short clips."""
    from espnet2_almtok.bench.measure import sync

    g = torch.Generator().manual_seed(seed)
    lengths = (min_s + (max_s - min_s) * torch.rand(n_files, generator=g)).tolist()
    clips = [test_signal(s, system.fs, seed + i) for i, s in enumerate(lengths)]
    system.batch(clips[:batch_size])  # warm-up
    sync(system.device)
    t0 = time.perf_counter()
    for i in range(0, n_files, batch_size):
        system.batch(clips[i: i + batch_size])
    sync(system.device)
    wall = time.perf_counter() - t0
    return {"files": n_files, "file_seconds": [min_s, max_s], "batch_size": batch_size,
            "audio_s": sum(lengths), "wall_s": wall, "audio_s_per_wall_s": sum(lengths) / wall}


def codes_match_rate(spec: Dict, device: str, dtype: str, seconds: float, window: int) -> Optional[float]:
    """Share of ALMTokenizer codes that ``dtype`` gives as float32 does, on the test signal."""
    torch.manual_seed(0)
    ref = SpeedSystem("almtok", spec, device, "float32", window)
    half = SpeedSystem("almtok", spec, device, dtype, window)
    half.tok.load_state_dict(ref.tok.state_dict())
    wav = test_signal(seconds, ref.fs)
    return float((ref.encode(wav) == half.encode(wav)).float().mean())


# ------------------------------------------------------------------------------ processes
def child(task: Dict) -> Dict:
    """Run one measurement in this process (the spec the parent passed)."""
    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    torch.manual_seed(0)
    system = SpeedSystem(task["name"], task["spec"], task["device"], task["dtype"], task["window"])
    info = {"params": system.params, "fs": system.fs, "setting": system.setting}
    if task["what"] == "point":
        info.update(measure_point(system, task["seconds"], task["repeats"], task["warmup"]))
    else:
        info.update(measure_throughput(system, task["files"], *task["file_seconds"], task["batch_size"]))
    return info


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2 ** 30
    except OSError:
        return 0.0


def run_in_child(task: Dict, max_rss_gb: float, timeout_s: float) -> Dict:
    """``child(task)`` in a fresh Python process, stopped (by its pid) beyond ``max_rss_gb`` of
    memory or ``timeout_s``; returns its result or ``{"error": why}``."""
    proc = subprocess.Popen([sys.executable, "-m", "espnet2_almtok.bench.speed", json.dumps(task)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    why = []

    def watch():
        t0 = time.time()
        while proc.poll() is None:
            if _rss_gb(proc.pid) > max_rss_gb:
                why.append(f"stopped: needed more than {max_rss_gb:g} GB of memory")
            elif time.time() - t0 > timeout_s:
                why.append(f"stopped: ran longer than {timeout_s:g} s")
            if why:
                proc.kill()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if why:
        return {"error": why[0]}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}"}
    return json.loads(out.strip().splitlines()[-1])


def run(quick: bool, device: str, dtype: str, lengths: List[float], window: int, repeats: int,
        threads: int, files: int, file_seconds: List[float], batch_size: int, max_rss_gb: float,
        timeout_s: float, systems: Optional[List[str]] = None, log=print) -> Dict:
    """The whole table: every system (or those named) at every length, then the throughput runs."""
    specs = {n: s for n, s in system_specs(quick).items() if systems is None or n in systems}
    results = {"systems": {}, "lengths": lengths, "window": window, "dtype": dtype, "repeats": repeats}
    for name, spec in specs.items():
        sys_dtype = dtype if spec["kind"] == "almtok" else "float32"
        base = {"name": name, "spec": spec, "device": device, "dtype": sys_dtype, "window": window,
                "threads": threads}
        r = {"config": spec["config"] or f"ESPnet {name} defaults", "dtype": sys_dtype, "points": []}
        for seconds in lengths:
            reps = repeats if seconds <= 60 else 1
            log(f"speed: {name} {seconds:g} s")
            point = run_in_child({**base, "what": "point", "seconds": seconds, "repeats": reps,
                                  "warmup": 1 if seconds <= 60 else 0}, max_rss_gb, timeout_s)
            for k in ("params", "fs", "setting"):
                if k in point:
                    r[k] = point.pop(k)
            r["points"].append({"seconds": seconds, **point})
        log(f"throughput: {name}")
        tp = run_in_child({**base, "what": "throughput", "files": files, "file_seconds": file_seconds,
                           "batch_size": batch_size}, max_rss_gb, timeout_s)
        r["throughput"] = {k: v for k, v in tp.items() if k not in ("params", "fs", "setting")}
        results["systems"][name] = r
    if dtype != "float32" and "almtok" in specs:
        results["codes_match_rate_vs_float32"] = {
            "seconds": 10.0, "rate": codes_match_rate(specs["almtok"], device, dtype, 10.0, window),
            "model": "untrained (random weights); a trained model's rate may differ"}
    results["goal"] = goal_check(results)
    return results


def goal_check(results: Dict) -> Dict:
    """ALMTokenizer's time against the fastest ESPnet codec at each length, and how flat its
    time per audio second is from 10 s on (the issue's goal: <= 0.5x, within 20 %)."""
    systems = results["systems"]
    alm = {p["seconds"]: p for p in systems.get("almtok", {}).get("points", []) if "encode_s" in p}
    out = {"ratio_to_fastest_espnet": {}, "flatness_from_10s": {}}
    for seconds, p in alm.items():
        for op in ("encode_s", "decode_s"):
            peers = [q[op] for n, s in systems.items() if n != "almtok" for q in s["points"]
                     if q["seconds"] == seconds and op in q]
            if peers:
                out["ratio_to_fastest_espnet"].setdefault(f"{seconds:g}", {})[op] = p[op] / min(peers)
    for op in ("encode_s_per_audio_s", "decode_s_per_audio_s"):
        per_s = [p[op] for s, p in alm.items() if s >= 10]
        if len(per_s) >= 2:
            out["flatness_from_10s"][op] = max(per_s) / min(per_s)
    if 60 in alm and 600 in alm and alm[60].get("peak_stream_mb"):
        out["stream_memory_10min_over_1min"] = alm[600]["peak_stream_mb"] / alm[60]["peak_stream_mb"]
    return out


MERGE_KEYS = ("lengths", "window", "dtype", "repeats", "quick")


def merge(path: Path, new: Dict) -> Dict:
    """The table in ``path`` (``speed.json``) with ``new``'s systems replacing or adding rows; an
    error unless both were measured alike (lengths, window, dtype, repeats, device, threads, CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--speed_merge: {path} does not exist; run the full table first (without it)")
    try:
        old = json.loads(path.read_text())
    except ValueError as e:
        old = f"unreadable JSON: {e}"
    if not isinstance(old, dict) or not {"machine", "systems"} <= set(old):
        why = old if isinstance(old, str) else "no machine/systems entries"
        raise ValueError(f"--speed_merge: {path} is not a speed table that benchmark --speed wrote ({why}); "
                         "run the full table instead")
    machine_keys = ("processor", "cpu_count", "device", "torch_threads", "torch", "gpu")
    differ = [k for k in MERGE_KEYS if old.get(k) != new.get(k)]
    differ += [f"machine.{k}" for k in machine_keys if old["machine"].get(k) != new["machine"].get(k)]
    if differ:
        raise ValueError(f"--speed_merge: {path} was measured otherwise ({', '.join(differ)} differ); "
                         "rerun the whole table instead")
    merged = dict(old)
    merged["systems"] = {**old["systems"], **new["systems"]}
    merged["runs"] = old.get("runs") or [{"command": old["command"], "systems": list(old["systems"])}]
    merged["runs"] = merged["runs"] + new["runs"]
    merged["goal"] = goal_check(merged)
    return merged


def markdown(results: Dict, machine: Dict, command: str) -> str:
    m = machine
    gpu = f" ({m['gpu']})" if "gpu" in m else ""
    runs = results.get("runs") or [{"command": command}]
    if len(runs) == 1:
        made = [f"Command: `{runs[0]['command']}`"]
    else:
        made = ["Commands (the later runs replaced the rows of the systems they name):", ""]
        made += [f"- {r.get('date', 'first run')}: `{r['command']}` ({', '.join(r['systems'])})" for r in runs]
    lines = [f"# Codec speed table ({'quick smoke run' if results['quick'] else 'full run'})", "", *made, "",
             f"Machine: {m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} "
             f"threads, device {m['device']}{gpu}. ALMTokenizer dtype {results['dtype']}, w = {results['window']}. "
             f"Times are medians ({results['repeats']} repeats up to 60 s, 1 beyond); peak memory is the growth while the call "
             "runs (model and input excluded), each point in a fresh process. ALMTokenizer's *stream* column "
             "is the block-by-block path of the inference CLI (encode_source + decode_blocks).", "",
             "| codec | params | s audio | encode s | decode s | enc s / audio s | dec s / audio s | "
             "peak enc MB | peak dec MB | stream MB |", "|" + "---|" * 10]
    for name, r in results["systems"].items():
        for p in r["points"]:
            if "error" in p:
                lines.append(f"| {name} | {r.get('params', 0) / 1e6:.1f} M | {p['seconds']:g} | {p['error']} |"
                             + " |" * 6)
                continue
            stream = f"{p['peak_stream_mb']:.0f}" if "peak_stream_mb" in p else "-"
            lines.append(f"| {name} | {r['params'] / 1e6:.1f} M | {p['seconds']:g} | {p['encode_s']:.3f} | "
                         f"{p['decode_s']:.3f} | {p['encode_s_per_audio_s']:.4f} | {p['decode_s_per_audio_s']:.4f} | "
                         f"{p['peak_encode_mb']:.0f} | {p['peak_decode_mb']:.0f} | {stream} |")
    lines += ["", "## Batch throughput (many short files, encode + decode)", "",
              "| codec | files | file s | batch | audio s / wall s |", "|---|---|---|---|---|"]
    for name, r in results["systems"].items():
        t = r["throughput"]
        if "error" in t:
            lines.append(f"| {name} | {t['error']} | | | |")
        else:
            lines.append(f"| {name} | {t['files']} | {t['file_seconds'][0]:g}-{t['file_seconds'][1]:g} | "
                         f"{t['batch_size']} | {t['audio_s_per_wall_s']:.2f} |")
    g = results["goal"]
    lines += ["", "## Goal check", "", "ALMTokenizer time / fastest ESPnet codec's (goal at 60 s and 10 min: <= 0.5): "
              + ", ".join(f"{s} s: encode {v.get('encode_s', float('nan')):.2f}, decode {v.get('decode_s', float('nan')):.2f}"
                          for s, v in g["ratio_to_fastest_espnet"].items()) + ".",
              "", "ALMTokenizer time per audio second, max / min from 10 s on (goal: <= 1.2): "
              + (", ".join(f"{k.split('_')[0]} {v:.2f}" for k, v in g["flatness_from_10s"].items())
                 or "not measured (needs two lengths >= 10 s)") + "."]
    if "stream_memory_10min_over_1min" in g:
        lines += ["", f"ALMTokenizer streaming peak memory, 10 min / 1 min (goal: <= 1.5): "
                      f"{g['stream_memory_10min_over_1min']:.2f}."]
    if "codes_match_rate_vs_float32" in results:
        c = results["codes_match_rate_vs_float32"]
        lines += ["", f"Codes in {results['dtype']} equal to float32 codes: {100 * c['rate']:.1f} % "
                      f"({c['seconds']:g} s test signal; {c['model']})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of large tensors
