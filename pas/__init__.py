"""Painless Activation Steering: steering vectors from labeled multiple-choice data."""

__version__ = "0.1.0"
