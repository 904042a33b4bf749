"""Inference: ALMTokenizer and ESPnet codecs over Kaldi-style inputs, the LM tasks, model facts (entry points in ``bin/``)."""
