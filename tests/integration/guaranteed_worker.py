"""``warmcast worker`` with Faust's processing guarantee ``GUARANTEE`` (``exactly_once`` or
``at_least_once``, Faust's default) given to the app it creates.

Run as ``python -m tests.integration.guaranteed_worker worker``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import faust

GUARANTEE = os.environ.get("GUARANTEE", "at_least_once")
_init = faust.App.__init__


def init(self: faust.App, *args: Any, **kwargs: Any) -> None:
    kwargs["processing_guarantee"] = GUARANTEE
    _init(self, *args, **kwargs)


faust.App.__init__ = init  # type: ignore[method-assign]

if __name__ == "__main__":
    from tools.cli import main

    sys.exit(main(sys.argv[1:]))
