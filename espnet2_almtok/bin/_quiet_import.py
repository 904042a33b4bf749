"""Import ESPnet modules without their import-time prints on stdout.

ESPnet 202511's ``espnet.nets.pytorch_backend.transformer.attention`` prints "Failed to import
Flash Attention..." to *stdout* when flash_attn is absent, which would corrupt
``--print_config > conf.yaml``. Import that one module first with stdout sent to stderr (only
that module: others bind ``sys.stdout`` as default arguments at import time).
"""

import contextlib
import importlib
import sys

NOISY_MODULES = ("espnet.nets.pytorch_backend.transformer.attention",)


def import_quietly(module: str):
    for noisy in NOISY_MODULES:
        if noisy not in sys.modules:
            with contextlib.redirect_stdout(sys.stderr):
                importlib.import_module(noisy)
    return importlib.import_module(module)
