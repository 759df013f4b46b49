"""Offline face cropping for DUM."""
