"""almtok: ALMTokenizer (Yang et al., 2025) as an ESPnet recipe plugin."""

from setuptools import find_packages, setup

install_requires = [
    "torch==2.8.0",
    "torchaudio==2.8.0",
    "espnet==202511",
    "numpy>=1.23,<2.4",  # espnet 202511's chunk iterator crashes on numpy 2.4
    "s3prl==0.4.18",  # breaks on torchaudio >= 2.9
    "setuptools<74",  # espnet 202511 imports pkg_resources
    "kaldiio>=2.18",
    "sentencepiece>=0.1.99",
    "humanfriendly>=10.0",
    "typeguard>=4.0",
    "soundfile>=0.12",
    "pyyaml>=6.0",
    "tqdm>=4.60",
    # ESPnet needs these at run time but lists them only as extras.
    "tensorboard>=2.10",
    "matplotlib>=3.7",
    # Scoring (recipe stage 8).
    "pesq>=0.0.4",
    "pystoi>=0.4",
    # s3prl's hf_* upstreams and the tiny test HuBERT.
    "transformers>=4.40,<5",
    # Independent judges whose models ship inside their wheels (no downloads): English ASR for
    # the WER of resyntheses, DNSMOS (ONNX) for quality.
    "pocketsphinx>=5.0,<6",
    "speechmos==0.0.1.1",
    "onnxruntime>=1.16",
    "jiwer>=3.0",
]

extras_require = {
    "test": ["pytest>=8.0", "pytest-timeout>=2.3"],
}

setup(
    name="espnet2_almtok",
    version="0.1.0",
    description="ALMTokenizer: a low-bitrate, semantic-rich audio codec tokenizer as an ESPnet plugin",
    packages=find_packages(include=["espnet2_almtok", "espnet2_almtok.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=install_requires,
    extras_require=extras_require,
    license="Apache-2.0",
)
