"""Evaluation: metrics (attackers, experiments and reports build on them)."""
