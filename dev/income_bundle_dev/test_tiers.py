"""`make test`: every test tier in turn (unit, integration, cluster), each tier's time printed.

Two modules of the cluster tier run beside the rest of their tier instead of after it: the
simulated-cluster playbook runs (`tests/cluster/test_sim_cluster_playbooks.py`, about 6 minutes
of one `ansible-playbook` at a time, mostly one busy core) and the slim images' MLServers
(`tests/cluster/test_slim_images.py`) share nothing with the other cluster tests but the trained
artifacts, which are made (or found up to date) before both pytest sessions start. The second
pytest runs under the same guard as the servers (income_bundle.process), so it dies with this
runner, and its output is printed after the rest of the tier's, whole.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.paths import project_root
from income_bundle.process import ServerProcess
from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = ["APART", "TIERS", "TestTiersSettings", "main", "run_tier"]

TIERS = ("unit", "integration", "cluster")
# Modules run in a second pytest beside the rest of their tier.
# The cluster tier's two lanes measured 6 min 43 s (playbooks) and 10 min 6 s (the rest) with the
# integration tier running beside them; the slim images' MLServers (about 2 min) even them out.
APART = {
    "cluster": (
        "tests/cluster/test_sim_cluster_playbooks.py",
        "tests/cluster/test_slim_images.py",
    )
}


class TestTiersSettings(CommandSettings):
    """Run the test tiers in turn, printing each tier's time; exit 1 when one failed."""

    __test__ = False  # a settings model, not a test class
    model_config = SettingsConfigDict(env_prefix="INCOME_TEST_TIERS_")

    tiers: list[Literal["unit", "integration", "cluster"]] = Field(
        list(TIERS), description="the tiers to run, in order"
    )
    pytest_args: str = Field("", description="extra pytest arguments, one shell-quoted string")


def _pytest(paths: Sequence[str], args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *paths, *args]


def _train() -> None:
    from income_bundle.training import train

    train()


def run_tier(
    tier: str,
    args: Sequence[str],
    root: Path,
    apart_modules: dict[str, tuple[str, ...]] = APART,
    prepare: Callable[[], object] = _train,
) -> bool:
    """Run one tier (its apart modules in a second pytest beside the rest, after `prepare`);
    print its time. Whether every test passed."""
    apart = [path for path in apart_modules.get(tier, ()) if (root / path).exists()]
    started = time.monotonic()
    print(f"== tests/{tier}", flush=True)
    beside = None
    if apart:
        prepare()  # both sessions would otherwise train at once into the same folders
        log = root / "build" / f"test-{tier}-apart.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        beside = ServerProcess(f"pytest {' '.join(apart)}", _pytest(apart, args), log, cwd=root)
    ignored = [f"--ignore={path}" for path in apart]
    main_status = subprocess.run(_pytest([f"tests/{tier}"], [*ignored, *args]), cwd=root).returncode
    statuses = [main_status]
    if beside is not None:
        apart_status = beside.wait()
        print(f"== {', '.join(apart)}, run beside the rest of tests/{tier} (exit {apart_status}):")
        print(beside.log_path.read_text(errors="replace"), end="", flush=True)
        statuses.append(apart_status)
    failed = any(status != 0 for status in statuses)
    took = time.monotonic() - started
    print(f"== tests/{tier} took {took:.0f} s (exit {1 if failed else 0})", flush=True)
    return not failed


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(
        TestTiersSettings, argv, prog="python -m income_bundle_dev.test_tiers"
    )
    args = shlex.split(settings.pytest_args)
    failed = [tier for tier in settings.tiers if not run_tier(tier, args, project_root())]
    if failed:
        print(f"== failed tiers: {' '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
