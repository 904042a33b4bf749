"""What every process of almtok does first: stay off the network, keep stdout clean.

**Offline.** Importing ESPnet's tasks (and s3prl, which imports ESPnet) imports ``g2p_en``,
which calls ``nltk.download`` for its tagger and CMUdict when they are missing: eight
``[nltk_data]`` error lines per process offline, and a network wait per try where packets are
dropped. :func:`install_offline_guard` (run when the ``espnet2_almtok`` package is imported, so
by every entry point, recipe step and library use before anything else) puts an import hook in
front of ``g2p_en`` that runs its import with ``nltk.download`` disabled. Nothing here uses
g2p; where a user does, NLTK's own error at use time says which resource to install. The hook
imports nothing itself (no cost until ``g2p_en`` is imported).

**Quiet imports.** ESPnet 202511's ``espnet.nets.pytorch_backend.transformer.attention`` prints
"Failed to import Flash Attention..." to *stdout* when flash_attn is absent, which would corrupt
``--print_config > conf.yaml``. :func:`import_quietly` imports that module first with stdout
sent to stderr (only that module: others bind ``sys.stdout`` as default arguments at import time).
"""

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import logging
import sys

# a module logger: logging through the root logger here would configure logging at WARNING
# before ESPnet's own basicConfig(level=INFO), and training logs would lose their INFO lines
logger = logging.getLogger(__name__)

OFFLINE_MODULES = ("g2p_en",)
NOISY_MODULES = ("espnet.nets.pytorch_backend.transformer.attention",)


class _NoDownloadLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` with ``nltk.download`` disabled."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            import nltk
        except ImportError:
            return self.loader.exec_module(module)
        download = nltk.download

        def skip_download(resource=None, *args, **kwargs):
            logger.debug(f"not downloading NLTK resource {resource!r} while importing {module.__name__}")
            return False

        nltk.download = skip_download
        try:
            self.loader.exec_module(module)
        finally:
            nltk.download = download


class _OfflineImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in OFFLINE_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _NoDownloadLoader(spec.loader)
        return spec


def install_offline_guard() -> None:
    """Put the import hook first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _OfflineImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _OfflineImportFinder())


def import_quietly(module: str):
    """``importlib.import_module(module)`` with ESPnet's stdout prints at import sent to stderr."""
    for noisy in NOISY_MODULES:
        if noisy not in sys.modules:
            with contextlib.redirect_stdout(sys.stderr):
                importlib.import_module(noisy)
    return importlib.import_module(module)
