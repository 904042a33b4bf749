"""BEATs frame features for the semantic priors, through ESPnet's BEATs encoder code.

An official BEATs checkpoint (``BEATs_iter3_plus_AS2M.pt`` etc.) is a ``torch.save`` of a plain
dict ``{"cfg": {config fields}, "model": state_dict}`` (fine-tuned ones add ``"label_dict"``
and ``predictor.*`` weights). Every value is a tensor, a container or a primitive, so it is read
with ``torch.load(..., weights_only=True)``: nothing in the file is executed. The model is
ESPnet's :class:`espnet2.asr.encoder.beats_encoder.BeatsEncoder` built from ``cfg`` (its module
names are the official ones) with the weights loaded by us, so missing or unexpected weights are
reported instead of silently left random.

Frames. BEATs cuts the 128-bin log-mel fbank (25 ms window, 10 ms shift, 16 kHz) into 16x16
patches: one time step per 16 fbank frames, i.e. **160 ms (6.25 Hz)**, each with 128 / 16 = 8
frequency patches. :func:`beats_layer_features` averages the 8 frequency patches of a time step,
so a 16 kHz clip of ``T`` samples gives ``(1 + (T - 400) // 160) // 16`` frames of width
``encoder_embed_dim`` (768 for the released models). This rate differs from the codec's; the
priors need frames only, not alignment with the codec.

Layers: ``layer`` 0 is the transformer input (patch embedding + convolutional positions, after
the input LayerNorm), ``layer`` L in 1..encoder_layers the output of transformer block L (the
released models are post-LN, so L = encoder_layers is the model's final output).
"""

from pathlib import Path
from typing import Dict

import numpy as np
import torch

FBANK_BINS = 128  # fixed by BeatsEncoder.preprocess


def read_beats_checkpoint(path) -> Dict:
    """Read an official BEATs checkpoint -> ``{"cfg": dict, "model": state_dict, ...}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"BEATs checkpoint {path} does not exist: pass the official .pt file (e.g. "
            "BEATs_iter3_plus_AS2M.pt from https://github.com/microsoft/unilm/tree/master/beats)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"could not read BEATs checkpoint {path} with torch.load(weights_only=True): {e}. An "
            "official BEATs checkpoint is a dict {'cfg': config dict, 'model': state dict} of "
            "tensors and plain values; re-save other files in that form") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("cfg"), dict) or not isinstance(ckpt.get("model"), dict):
        found = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an official BEATs checkpoint: expected a dict with 'cfg' (dict) "
                         f"and 'model' (state dict), found {found}")
    return ckpt


def build_beats(cfg: Dict):
    """A randomly initialised ESPnet ``BeatsEncoder`` for the BEATs config dict ``cfg``."""
    from espnet2.asr.encoder.beats_encoder import BeatsEncoder

    model = BeatsEncoder(input_size=1, beats_config=cfg)
    model.reload_pretrained_parameters()  # BEATs' own init (no checkpoint attached here)
    return model


def load_beats(path, device: str = "cpu"):
    """Official BEATs checkpoint ``path`` -> ESPnet ``BeatsEncoder`` in eval mode on ``device``."""
    ckpt = read_beats_checkpoint(path)
    try:
        model = build_beats(ckpt["cfg"])
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except Exception as e:
        raise ValueError(f"BEATs checkpoint {path}: its 'cfg' and 'model' do not build a BEATs "
                         f"encoder: {e}") from e
    unexpected = [k for k in unexpected if not k.startswith("predictor")]  # fine-tuned heads
    if missing or unexpected:
        raise ValueError(f"BEATs checkpoint {path} does not match its config: missing weights "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected weights "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return model.to(device).eval()


def beats_num_layers(model) -> int:
    """Number of transformer blocks; valid ``layer`` values are ``0..beats_num_layers(model)``."""
    return len(model.encoder.layers)


@torch.no_grad()
def beats_layer_features(model, wav: torch.Tensor, layer: int) -> np.ndarray:
    """``wav`` ``(T,)`` at 16 kHz -> ``(frames, D)`` float32: hidden state ``layer`` averaged over
    the frequency patches of each 160 ms time step."""
    n = beats_num_layers(model)
    if not 0 <= layer <= n:
        raise ValueError(f"layer {layer} is out of range: the BEATs model has layers 0..{n}")
    device = next(model.parameters()).device
    patches, _ = model.extract_features(wav.view(1, -1).float().to(device), None, max_layer=layer)
    n_freq = FBANK_BINS // model.input_patch_size
    steps = patches.shape[1] // n_freq
    frames = patches[0, : steps * n_freq].reshape(steps, n_freq, -1).mean(1)  # time-major patches
    return frames.float().cpu().numpy()
