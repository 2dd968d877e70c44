"""``python -m optin.cli``: the ``optin`` program (as ``torchrun ... -m optin.cli`` runs it)."""

import sys

from optin.cli import main

sys.exit(main())
