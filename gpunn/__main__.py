"""``python -m gpunn``: the same command as ``gpunn``."""

import sys

from .cli import main

sys.exit(main())
