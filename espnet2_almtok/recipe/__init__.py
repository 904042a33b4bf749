"""Python steps of the egs2/almtok recipes (each a small CLI: python -m espnet2_almtok.recipe.<name>)."""
