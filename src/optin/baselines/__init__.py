"""Baseline protection systems the opt-in obfuscator is compared with (ADR, McAdams)."""
