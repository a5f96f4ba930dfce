"""Flax encoders (BEATs, EAT), classification heads and the dual-branch model."""
