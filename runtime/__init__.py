"""Runtime stage: backends and tiled inference (``lightbsr.runtime``); imports without torch."""
