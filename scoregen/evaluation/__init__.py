"""Measuring models and samplers: metrics, feature networks, likelihoods, tuned grids, the sweep."""
