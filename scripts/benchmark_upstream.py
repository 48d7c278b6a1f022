"""Per-call cost of the gateway's MLServer client against others (see income_bundle.seldon.upstream_benchmark)."""

import sys

from income_bundle.seldon.upstream_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
