#!/usr/bin/env python3
"""Entry point: ``python -m espnet2_almtok.bin.compare --help`` (the library is :mod:`espnet2_almtok.bench.compare`)."""

from espnet2_almtok.bench.compare import main

if __name__ == "__main__":
    main()
