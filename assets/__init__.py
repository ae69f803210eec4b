"""Shipped worlds: one checkpoint directory per world, installed as package data of ``worldsim.assets``."""
