"""Cold start and per-model latency of the income models on real MLServer (see income_bundle_dev.benchmarks.serving)."""

import sys

from income_bundle_dev.benchmarks.serving import main

if __name__ == "__main__":
    sys.exit(main())
