"""Privacy: the paper's losses, the deobfuscator adversary and the obfuscator API."""

from optin.privacy.losses import (
    agreement,
    obfuscator_objective,
    privacy_loss,
    reconstruction_loss,
    target_loss,
)

__all__ = [
    "agreement",
    "obfuscator_objective",
    "privacy_loss",
    "reconstruction_loss",
    "target_loss",
]
