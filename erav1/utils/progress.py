"""Progress bars that survive into the executed book.

The book stores what a chapter printed. tqdm's notebook widget renders empty there, and a bar refreshed many
times a second fills the stored output, so long work shows one plain-text bar on stdout, throttled, which
disappears when the work is done.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm


def text_bar(*args: Any, enabled: bool = True, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)`` as a plain-text bar on ``file`` (stdout); ``enabled=False`` shows nothing."""
    return tqdm(*args, file=file or sys.stdout, ascii=True, leave=False, mininterval=1.0, disable=not enabled, **kwargs)
