"""Token files: Kaldi ark/scp of int32 vectors, flattened frame-major.

A clip's codes ``(n_q, N)`` are stored as the int32 vector ``codes.T.reshape(-1)``
(``t0q0 t0q1 .. t0q{n_q-1} t1q0 ..``), ESPnet SpeechLM's "flattened per frame" layout; the
directory's ``meta.yaml`` says ``n_q``, ``window``, ``codebook_size`` and the rates.
"""

import os
from pathlib import Path
from typing import Dict, Iterator, Tuple

import kaldiio
import numpy as np
import yaml


def flatten_codes(codes: np.ndarray) -> np.ndarray:
    """``(n_q, N)`` -> int32 ``(N * n_q,)`` frame-major."""
    return np.ascontiguousarray(np.asarray(codes).T.reshape(-1), dtype=np.int32)


def unflatten_codes(vec: np.ndarray, n_q: int, name: str = "codes") -> np.ndarray:
    """int ``(N * n_q,)`` -> ``(n_q, N)``."""
    vec = np.asarray(vec)
    if vec.ndim != 1 or vec.size % n_q:
        raise ValueError(f"{name}: {vec.shape} is not a flat vector of whole frames of n_q={n_q} codes")
    return vec.reshape(-1, n_q).T


def write_meta(dirname: Path, meta: Dict) -> None:
    atomic_write_text(Path(dirname) / "meta.yaml", yaml.safe_dump(meta, sort_keys=True))


def read_meta(dirname: Path) -> Dict:
    path = Path(dirname) / "meta.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: token dirs written by codec_inference have one")
    return yaml.safe_load(path.read_text())


def read_codes_scp(scp: Path, n_q: int = None) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(utt_id, codes (n_q, N))`` from a ``codes.scp`` (``n_q`` from ``meta.yaml`` if omitted)."""
    scp = Path(scp)
    n_q = n_q or read_meta(scp.parent)["n_q"]
    for key, vec in kaldiio.load_scp_sequential(str(scp)):
        yield key, unflatten_codes(vec, n_q, f"{scp}:{key}")


def point_scp_at_final_dir(tmp_codes: Path, final_codes: Path) -> None:
    """``codes.scp`` is written beside its ark in a temporary dir: name the ark by the path it
    will have once :func:`move_outputs` has moved the dir to ``final_codes``."""
    scp = Path(tmp_codes) / "codes.scp"
    scp.write_text(scp.read_text().replace(str(tmp_codes), str(Path(final_codes).resolve())))


def move_outputs(tmp: Path, out: Path) -> None:
    """Move every entry of the temporary dir ``tmp`` into ``out`` (replacing an earlier one of
    the same name), then remove ``tmp``: a job's outputs appear only once they are complete."""
    import shutil

    for item in list(Path(tmp).iterdir()):
        target = Path(out) / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    shutil.rmtree(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (no half-written files)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
