"""optin: opt-in privacy protection for audio."""

__version__ = "0.1.0"
