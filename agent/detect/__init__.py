"""Detectors, one per file, behind the seam in :mod:`agent.detect.base`."""
