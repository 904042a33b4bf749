"""Shared fixtures. Tests mirror the package layout under test/."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DEBUG_CONFIG = ROOT / "conf" / "tuning" / "train_almtok_debug.yaml"
SHARED = ROOT.parent / "shared"
MINI_AN4 = SHARED / "data" / "mini_an4.tar.gz"


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
DEMO_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please call stella and ask her to bring these things",
    "a tokenizer turns sound into a short sequence of symbols",
    "seven large boats sailed across the quiet harbour",
    "music and speech share the same air",
    "a plucked string fading away",
]


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
