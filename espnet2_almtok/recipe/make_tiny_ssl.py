"""Build a tiny, *randomly initialised* HuggingFace HuBERT directory for offline smoke runs.

    python -m espnet2_almtok.recipe.make_tiny_ssl --out downloads/tiny_hubert --hidden 32

Pretrained SSL weights cannot be downloaded in an offline sandbox; this gives s3prl's
``hf_hubert_custom`` upstream something real to load so the prior-extraction stage runs end to
end. Its features carry no semantics: priors from it are for testing the pipeline only. For
real priors point ``--ssl_path`` at a pretrained HuBERT/WavLM directory.
"""

import argparse
from pathlib import Path


def build(out: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    conf = HubertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=hidden * 2, conv_dim=(hidden,) * 7,
                        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    tmp = out.with_name(out.name + ".tmp")
    HubertModel(conf).save_pretrained(tmp)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                             do_normalize=True, return_attention_mask=True).save_pretrained(tmp)
    tmp.rename(out)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    a = p.parse_args()
    print(build(a.out, a.hidden, a.layers))
