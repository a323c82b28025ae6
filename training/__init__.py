"""Training stage: LightBSR/KDSR teachers and distilled students (``lightbsr.training``)."""
