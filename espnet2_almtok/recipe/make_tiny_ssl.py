"""Build a tiny, *randomly initialised* SSL model for offline smoke runs.

    python -m espnet2_almtok.recipe.make_tiny_ssl --out downloads/tiny_hubert --hidden 32
    python -m espnet2_almtok.recipe.make_tiny_ssl --kind wav2vec2 --out downloads/tiny_wav2vec2
    python -m espnet2_almtok.recipe.make_tiny_ssl --kind beats --out downloads/tiny_beats.pt

Pretrained SSL weights cannot be downloaded in an offline sandbox; this gives the semantic-prior
stage something real to load so it runs end to end:

* ``hubert`` (default) / ``wav2vec2``: a HuggingFace directory (model + feature extractor) for
  s3prl's ``hf_hubert_custom`` / ``hf_wav2vec2_custom`` upstreams;
* ``beats``: a ``.pt`` file in the official BEATs checkpoint format (``{"cfg", "model"}``) for
  ``--upstream beats`` (ESPnet's BEATs encoder); ``--hidden`` must be a multiple of 16 (the
  convolutional positional embedding has 16 groups).

Their features carry no semantics: priors from them are for testing the pipeline only. For real
priors point ``--ssl_path`` at a pretrained HuBERT/wav2vec2 directory or BEATs checkpoint.
"""

import argparse
import os
from pathlib import Path


def _save_hf(out: Path, model) -> Path:
    """``save_pretrained`` the model and a 16 kHz feature extractor into ``out`` (via a tmp dir)."""
    from transformers import Wav2Vec2FeatureExtractor

    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                             do_normalize=True, return_attention_mask=True).save_pretrained(tmp)
    tmp.rename(out)
    return out


def _hf_conf_kwargs(hidden: int, layers: int) -> dict:
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                intermediate_size=hidden * 2, conv_dim=(hidden,) * 7,
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def build(out: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A tiny HuggingFace HuBERT directory ``out`` (kept if it exists)."""
    import torch
    from transformers import HubertConfig, HubertModel

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    return _save_hf(out, HubertModel(HubertConfig(**_hf_conf_kwargs(hidden, layers))))


def build_wav2vec2(out: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A tiny HuggingFace Wav2Vec2 directory ``out`` (kept if it exists)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    return _save_hf(out, Wav2Vec2Model(Wav2Vec2Config(**_hf_conf_kwargs(hidden, layers))))


def tiny_beats_cfg(hidden: int, layers: int) -> dict:
    """A BEATs config with the released models' options (relative positions, gated relative
    position bias, deep norm, post-LN) at toy size."""
    if hidden % 16:
        raise ValueError(f"--hidden {hidden}: a BEATs width must be a multiple of 16 (positional conv groups)")
    return dict(input_patch_size=16, embed_dim=hidden // 2, conv_bias=False, encoder_layers=layers,
                encoder_embed_dim=hidden, encoder_ffn_embed_dim=hidden * 2, encoder_attention_heads=2,
                activation_fn="gelu", layer_norm_first=False, deep_norm=True, dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0, dropout_input=0.0,
                conv_pos=16, conv_pos_groups=16, relative_position_embedding=True, num_buckets=320,
                max_distance=800, gru_rel_pos=True, finetuned_model=False)


def build_beats(out: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A tiny BEATs checkpoint file ``out`` in the official format (kept if it exists)."""
    import torch

    from espnet2_almtok.recipe.beats_features import build_beats as build_model

    if out.exists():
        return out
    cfg = tiny_beats_cfg(hidden, layers)
    torch.manual_seed(seed)
    model = build_model(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"cfg": cfg, "model": model.state_dict()}, tmp)
    os.replace(tmp, out)
    return out


BUILDERS = {"hubert": build, "wav2vec2": build_wav2vec2, "beats": build_beats}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="a directory (hubert, wav2vec2) or a .pt file (beats)")
    p.add_argument("--kind", choices=sorted(BUILDERS), default="hubert")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    a = p.parse_args()
    print(BUILDERS[a.kind](a.out, a.hidden, a.layers))
