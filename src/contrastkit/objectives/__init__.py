"""Objective families: how a row of logits and its pairing become a number."""
