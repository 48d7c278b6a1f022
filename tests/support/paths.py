"""Where the tests find the checkout, their own data, and the pinned upstream sources."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
TEST_DATA = TESTS / "data"
# Knative's release files, as the kserve_stack role applies them (tests/data/knative-release).
KNATIVE_RELEASE = TEST_DATA / "knative-release"
# The pinned charts, CRDs and monitors beside the checkout (../shared/upstream; CI always has it).
UPSTREAM = ROOT.parent / "shared" / "upstream"
