"""Offline cue calibration: traces -> margins -> per-cue table -> selected cues -> profile file and plot.

``calibrate()`` in ``run.py`` runs the whole pipeline; each step has its own module.
"""
