#!/usr/bin/env python3
"""Entry point: ``python -m espnet2_almtok.bin.codec_inference --help`` (the library is :mod:`espnet2_almtok.inference.codec_inference`)."""

from espnet2_almtok.inference.codec_inference import main

if __name__ == "__main__":
    main()
