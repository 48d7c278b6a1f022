"""Pipeline and gateway latency/throughput against direct MLServer calls (see income_bundle_dev.benchmarks.gateway)."""

import sys

from income_bundle_dev.benchmarks.gateway import main

if __name__ == "__main__":
    sys.exit(main())
