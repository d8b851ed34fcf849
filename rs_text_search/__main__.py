"""``python -m rs_text_search``: the headless command line (see rs_text_search/cli.py)."""

import sys

from .cli import main

sys.exit(main())
