"""Per-call cost of the gateway's MLServer client against others (see income_bundle_dev.benchmarks.mlserver_client)."""

import sys

from income_bundle_dev.benchmarks.mlserver_client import main

if __name__ == "__main__":
    sys.exit(main())
