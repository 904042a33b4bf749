"""ESPnet task classes of almtok.

Importing ESPnet's tasks imports ``g2p_en``, which calls ``nltk.download`` for its tagger and
CMUdict when they are missing: eight ``[nltk_data]`` error lines per process offline, and a
network wait per try where packets are dropped. We import ``g2p_en`` first with
``nltk.download`` disabled, so no process of ours goes to the network at start-up. Nothing here
uses g2p; where a user does, NLTK's own error at use time says which resource to install.
"""

import logging

# a module logger: calling logging.debug() on the root logger here would configure logging at
# WARNING before ESPnet's own basicConfig(level=INFO), and training logs would lose their INFO lines
logger = logging.getLogger(__name__)


def _import_g2p_en_offline() -> None:
    import sys

    if "g2p_en" in sys.modules:
        return
    try:
        import nltk
    except ImportError:
        return
    download = nltk.download

    def skip_download(resource=None, *args, **kwargs):
        logger.debug(f"not downloading NLTK resource {resource!r} at import time")
        return False

    nltk.download = skip_download
    try:
        import g2p_en  # noqa: F401
    except Exception as e:  # ESPnet's own import then reports what is wrong
        logger.debug(f"g2p_en import failed: {e}")
    finally:
        nltk.download = download


_import_g2p_en_offline()
