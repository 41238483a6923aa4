"""``python -m gpunn``: the same command as ``gpunn``."""

from .cli import leave, main

leave(main())
