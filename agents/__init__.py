"""Policies: random, keyboard, scripted drivers, agents trained in imagination (issues 3-6)."""
