"""Pipeline and gateway latency/throughput against direct MLServer calls (see income_bundle.seldon.benchmark)."""

import sys

from income_bundle.seldon.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
