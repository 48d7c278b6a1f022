"""Cold start and per-model latency of the income models on real MLServer (see income_bundle.benchmark)."""

import sys

from income_bundle.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
