"""Command-line entry points (python -m espnet2_almtok.bin.<name>)."""
