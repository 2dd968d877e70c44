"""Test helpers: generated stand-ins for real corpora (never real recordings), for optin's tests
and for users who test code built on optin. Nothing in the package imports this."""
