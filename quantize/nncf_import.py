"""Import NNCF with its log lines routed through Python logging like ours.

NNCF installs its own stdout handler at import (and stops propagation), so its INFO lines and
bit-width tables were printed between ours in another format. Here they propagate instead, at
WARNING unless the `qwen_edge` logger is at DEBUG (`qwen-edge -v`)."""

from __future__ import annotations

import logging


def import_nncf():
    import nncf
    from nncf.common.logging import logger as nncf_logging

    nncf_log = nncf_logging.nncf_logger
    if nncf_log.handlers:  # drop NNCF's own stdout handler, once
        nncf_logging.disable_logging()
        nncf_log.propagate = True
    verbose = logging.getLogger("qwen_edge").isEnabledFor(logging.DEBUG)
    nncf_log.setLevel(logging.INFO if verbose else logging.WARNING)
    return nncf
