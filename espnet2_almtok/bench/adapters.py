"""One interface over ALMTokenizer and ESPnet's RVQ codecs for the benchmark.

A codec is measured at each of its *settings*: ALMTokenizer at each trained window ``w``;
SoundStream/Encodec/DAC at each configured target bandwidth (= number of codebooks used).
"""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List

import torch
import yaml


@dataclass
class Setting:
    label: str  # "w=4" or "n_q=2"
    frames_per_s: float  # token positions per second of audio
    n_q: int  # codes per position
    codes_per_s: float  # frames_per_s * n_q
    bitrate: float  # codes_per_s * log2(codebook size)
    kwargs: Dict = field(default_factory=dict)  # passed to encode/decode

    def as_dict(self) -> Dict:
        d = asdict(self)
        d.pop("kwargs")
        return d


class CodecUnderTest:
    """``encode(wav (B, 1, T), setting) -> codes``; ``decode(codes, setting) -> (B, 1, T')``."""

    def __init__(self, name: str, config: Path, device: str = "cpu"):
        from espnet2_almtok.tasks.codec import codec_choices

        conf = yaml.safe_load(Path(config).read_text())
        self.name = name
        self.config = str(config)
        self.kind = conf["codec"]
        self.codec_conf = conf["codec_conf"]
        self.codec = codec_choices.get_class(self.kind)(**self.codec_conf).to(device).eval()
        self.device = device
        self.fs = self.codec_conf["sampling_rate"]
        self.settings = self._settings()

    def _settings(self) -> List[Setting]:
        gp = self.codec_conf["generator_params"]
        if self.kind == "almtok":
            g = self.codec.generator
            bits = math.log2(g.codebook_size)
            return [Setting(f"w={w}", g.frame_rate / w, g.n_q, g.frame_rate / w * g.n_q,
                            g.frame_rate / w * g.n_q * bits, {"window": w}) for w in g.windows]
        frame_rate = self.fs / math.prod(gp["encdec_ratios"])
        bits = math.log2(gp["quantizer_bins"])
        out = []
        for bw in gp["quantizer_target_bandwidth"]:
            n_q = max(1, math.floor(bw * 1000 / (bits * frame_rate) + 1e-6))
            out.append(Setting(f"n_q={n_q}", frame_rate, n_q, frame_rate * n_q, frame_rate * n_q * bits,
                               {"target_bw": bw}))
        return out

    @property
    def generator_params(self) -> int:
        return sum(p.numel() for p in self.codec.generator.parameters())

    @property
    def discriminator_params(self) -> int:
        return sum(p.numel() for p in self.codec.discriminator.parameters())

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, s: Setting) -> torch.Tensor:
        return self.codec.encode(wav, **s.kwargs)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, s: Setting) -> torch.Tensor:
        if self.kind == "almtok":
            return self.codec.decode(codes, **s.kwargs)
        return self.codec.decode(codes)

    def first_codebook(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (ESPnet layout ``(n_q, B, N)``) -> first-codebook tokens ``(B, N)``."""
        return codes[0]

    @property
    def codebook_size(self) -> int:
        gp = self.codec_conf["generator_params"]
        return gp["codebook_size"] if self.kind == "almtok" else gp["quantizer_bins"]
