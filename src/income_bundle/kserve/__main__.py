"""`python -m income_bundle.kserve infer ...` (see income_bundle.kserve.client)."""

import sys

from income_bundle.kserve.client import main

sys.exit(main())
