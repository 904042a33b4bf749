"""Benchmark pieces used by python -m espnet2_almtok.bin.benchmark."""
