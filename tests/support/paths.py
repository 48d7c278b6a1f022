"""Where the tests find the checkout and their own data."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
TEST_DATA = TESTS / "data"
