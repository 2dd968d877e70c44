"""Training: classifier fitting, the adversarial obfuscator loop, checkpoints, distributed."""
