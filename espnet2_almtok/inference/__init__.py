"""Inference: ALMTokenizer and ESPnet codecs over Kaldi-style inputs, the LM tasks, model facts (entry points in ``bin/``)."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (sizes such as --batch_size, --beam_size)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
