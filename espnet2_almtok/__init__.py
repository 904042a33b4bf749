"""almtok: ALMTokenizer (Yang et al., 2025) as an ESPnet recipe plugin.

``from espnet2_almtok import ALMTokenizer`` is the entry point for users who want tokens; the
ESPnet task is :class:`espnet2_almtok.tasks.codec.ALMTokCodecTask`.
"""

from espnet2_almtok.startup import install_offline_guard

__version__ = "0.1.0"

install_offline_guard()  # before anything imports ESPnet (startup.py: no NLTK downloads)


def __getattr__(name):  # lazy: importing the package must not import ESPnet
    if name == "ALMTokenizer":
        from espnet2_almtok.api import ALMTokenizer

        return ALMTokenizer
    raise AttributeError(name)
