"""Attention kernels behind ``formers.core.attention``; imports nothing else of formers."""
