#!/usr/bin/env python3
"""Entry point: ``python -m espnet2_almtok.bin.benchmark --help`` (the library is :mod:`espnet2_almtok.bench.benchmark`)."""

from espnet2_almtok.bench.benchmark import main

if __name__ == "__main__":
    main()
