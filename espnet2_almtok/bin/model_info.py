#!/usr/bin/env python3
"""Entry point: ``python -m espnet2_almtok.bin.model_info --help`` (the library is :mod:`espnet2_almtok.inference.model_info`)."""

from espnet2_almtok.inference.model_info import main

if __name__ == "__main__":
    main()
