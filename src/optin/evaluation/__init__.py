"""Evaluation: attackers, attacker families, protection systems, experiments and reports."""
