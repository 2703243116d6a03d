"""``python -m flwire``: the ``flwire`` command (see :mod:`flwire.cli`)."""

import sys

from flwire.cli import main

sys.exit(main())
