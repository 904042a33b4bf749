"""Shared fixtures. Tests mirror the package layout under test/."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch

from espnet2_almtok.recipe.data_prep import DEMO_SENTENCES  # noqa: F401 (LM tests: the demo corpus text)

ROOT = Path(__file__).resolve().parents[1]
DEBUG_CONFIG = ROOT / "conf" / "tuning" / "train_almtok_debug.yaml"
SHARED = ROOT.parent / "shared"
MINI_AN4 = SHARED / "data" / "mini_an4.tar.gz"
RECIPES = ROOT / "egs2" / "almtok"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes-long tests (run with `-m slow`)")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def debug_config() -> Path:
    return DEBUG_CONFIG


@pytest.fixture()
def tokenizer():
    from espnet2_almtok import ALMTokenizer

    return ALMTokenizer.from_config(DEBUG_CONFIG)


def copy_recipe(dst_root: Path, name: str) -> Path:
    """``egs2/almtok/<name>`` without its outputs into ``dst_root/<name>``; utils/ and conf/
    link to this clone (so ``../codec1`` from ``lm1`` is the copied codec recipe)."""
    import shutil

    src_dir, dst = RECIPES / name, dst_root / name
    dst.mkdir()
    for item in ("run.sh", "path.sh", "db.sh", "cmd.sh", "local"):
        src = src_dir / item
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst / item)
    (dst / "utils").symlink_to(ROOT / "utils")
    (dst / "conf").symlink_to(ROOT / "conf")
    return dst


def run_recipe(recipe: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINI_AN4": str(MINI_AN4)}
    proc = subprocess.run(["./run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True, timeout=1500)
    if check:
        assert proc.returncode == 0, f"run.sh {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="session")
def demo_codec_recipe(tmp_path_factory) -> Path:
    """The codec recipe run once on the demo corpus (stages 1-9; 10-11 not asked for), shared by the recipe tests."""
    recipe = copy_recipe(tmp_path_factory.mktemp("egs"), "codec1")
    out = run_recipe(recipe)
    assert "Successfully finished. [stages 1-11]" in out.stdout
    return recipe


def recipe_default(name: str, recipe: str = "codec1") -> str:
    """A variable's default in a recipe's run.sh (``name="value"``): what a user gets."""
    import re

    text = (RECIPES / recipe / "run.sh").read_text()
    match = re.search(rf'^{name}="([^"]*)"', text, re.M)
    assert match, f"{name} has no default in egs2/almtok/{recipe}/run.sh"
    return match.group(1)


def run_python(args, cwd, timeout=600) -> subprocess.CompletedProcess:
    """``python ARGS`` with this clone importable; fails the test with the tail of stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stderr[-4000:]}"
    return proc


def make_data_dir(root: Path, n: int = 4, seconds: float = 0.8, lengths=None) -> Path:
    """``root/data`` with ``wav.scp`` and ``audio_shape``: ``n`` speech-like clips of ``seconds``
    each, or one clip per entry of ``lengths`` (seconds)."""
    d = root / "data"
    (d / "wav").mkdir(parents=True)
    scp, shape = [], []
    for i, sec in enumerate(lengths if lengths is not None else [seconds] * n):
        utt = f"utt{i}"
        wav = speechlike(sec, seed=i).numpy()
        soundfile.write(d / "wav" / f"{utt}.wav", wav, 16000)
        scp.append(f"{utt} {d / 'wav' / (utt + '.wav')}\n")
        shape.append(f"{utt} {len(wav)}\n")
    (d / "wav.scp").write_text("".join(scp))
    (d / "audio_shape").write_text("".join(shape))
    return d


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> torch.Tensor:
    """A deterministic harmonic signal with a moving pitch and an envelope, ``(T,)``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    f0 = 120 + 40 * torch.sin(2 * torch.pi * 1.5 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / sr
    wav = sum(torch.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t).abs()
    return (0.2 * wav * env + 0.01 * torch.randn(t.shape, generator=g)).float()


# ---------------------------------------------------------------- LM fixtures


@pytest.fixture(scope="session")
def bpemodel(tmp_path_factory):
    from espnet2_almtok.lm.vocab import train_bpe

    return train_bpe(DEMO_SENTENCES, tmp_path_factory.mktemp("bpe") / "bpe", 60)


@pytest.fixture(scope="session")
def text_tokenizer(bpemodel):
    from espnet2_almtok.lm.vocab import TextTokenizer

    return TextTokenizer(bpemodel)


@pytest.fixture(scope="session")
def vocab(text_tokenizer):
    from espnet2_almtok.lm.vocab import Vocabulary

    return Vocabulary(text_tokenizer.pieces(), n_q=3, codebook_size=64)


# ----------------------------------------------------------------- a fake SLURM submitter
# A fake sbatch: records its argv (NUL-separated), then runs the script as SLURM would, once per
# array task, with the task's stdout/stderr going to --output (%a: the task index), truncated
# unless --open-mode=append is given, as sbatch does. FAKE_SBATCH_SKIP=J: task J never starts
# (a node that died before the task began).
FAKE_SBATCH = r"""#!/usr/bin/env bash
printf '%s\0' "$@" > "$FAKE_SBATCH_ARGV"
array="" output="" mode=truncate
while [[ "$1" == -* ]]; do
  case "$1" in
    --array) array=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --open-mode=*) mode=${1#--open-mode=}; shift ;;
    --open-mode) mode=$2; shift 2 ;;
    --wait|--parsable|--*=*) shift ;;
    *) shift 2 ;;
  esac
done
script=$1; shift
echo 4242
rc=0
if [ -n "$array" ]; then
  r=${array%%%*}
  for ((j = ${r%-*}; j <= ${r#*-}; j++)); do
    [ "$j" = "${FAKE_SBATCH_SKIP:-}" ] && { rc=1; continue; }
    out=${output//%a/$j}; [ "$mode" = append ] || : > "$out"
    SLURM_JOB_ID=4242 SLURM_ARRAY_TASK_ID=$j bash "$script" "$@" >> "$out" 2>&1 || rc=1
    echo "slurm output of task $j" >> "$out"
  done
else
  [ "$mode" = append ] || : > "$output"
  SLURM_JOB_ID=4242 bash "$script" "$@" >> "$output" 2>&1 || rc=1
  echo "slurm output" >> "$output"
fi
exit $rc
"""


def fake_slurm(tmp_path):
    """(environment prefix putting the fake ``sbatch`` first on PATH, the file its argv goes to)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    argv = tmp_path / "sbatch.argv"
    return f"PATH={bin_dir}:$PATH FAKE_SBATCH_ARGV={argv} ", argv


@pytest.fixture()
def one_thread():
    """Torch on one thread for the test (small models on 2 busy cores are far faster without
    OpenMP oversubscription); the previous count is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
