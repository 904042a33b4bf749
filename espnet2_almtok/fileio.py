"""Token files: Kaldi ark/scp of int32 vectors, flattened frame-major.

A clip's codes ``(n_q, N)`` are stored as the int32 vector ``codes.T.reshape(-1)``
(``t0q0 t0q1 .. t0q{n_q-1} t1q0 ..``), ESPnet SpeechLM's "flattened per frame" layout; the
directory's ``meta.yaml`` says ``n_q``, ``window``, ``codebook_size`` and the rates.
"""

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

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


def hold_lock(directory: Path, job: str, advice: str):
    """An exclusive lock on ``directory/.lock`` for as long as the returned handle lives (keep it
    until the process exits). A second ``job`` writing to the same directory is refused, naming
    the lock and ``advice``, instead of deleting or overwriting this one's temporary files."""
    import errno
    import fcntl

    handle = open(Path(directory) / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(f"{directory} is in use by another {job} (lock {Path(directory) / '.lock'}); "
                           f"{advice}") from None
    except OSError as e:  # a file system without locks (some NFS and Lustre mounts)
        if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        logging.warning(f"cannot lock {Path(directory) / '.lock'} ({e.strerror}): a second {job} on "
                        f"{directory} at the same time would not be stopped")
    return handle


# ---------------------------------------------------------------------------- .done markers
def file_sha256(path: Union[str, Path]) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def optional_file_sha256(path: Union[str, Path]) -> Optional[str]:
    """:func:`file_sha256`, or None when ``path`` does not exist (an optional input table)."""
    return file_sha256(path) if Path(path).is_file() else None


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def done_signature(**fields) -> str:
    """The text of a ``.done`` marker: what a finished job covers (its inputs' digests, its
    options), as JSON. A rerun whose signature differs redoes the job (:func:`done_matches`)."""
    return json.dumps(fields, indent=1) + "\n"


def done_matches(done: Path, signature: str, what: str) -> bool:
    """True when the marker ``done`` records ``signature``: ``what`` is finished for these inputs
    and options (skip it). A marker of other inputs or options is removed, with a warning, so the
    job is redone and nothing looks finished meanwhile."""
    done = Path(done)
    try:
        recorded = done.read_text()
    except FileNotFoundError:
        return False
    if recorded == signature:
        logging.info(f"{what} is complete for these inputs (.done); nothing to do")
        return True
    logging.warning(f"{what} holds outputs of other inputs or options (.done differs); redoing the job")
    done.unlink(missing_ok=True)
    return False
