"""Gymnasium environments built on the engine, and adapters for source envs (issue 4)."""
