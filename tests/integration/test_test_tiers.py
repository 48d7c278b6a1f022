"""`make test`'s runner (income_bundle_dev.test_tiers): a module run apart runs beside the rest of
its tier, not also inside it, its output comes whole after the tier's, and a failure in either
fails the tier."""

from __future__ import annotations

import textwrap

from income_bundle_dev.test_tiers import run_tier

APART = {"demo": ("tests/demo/test_apart.py",)}


def _tree(tmp_path, apart_passes: bool, rest_passes: bool):
    tests = tmp_path / "tests" / "demo"
    tests.mkdir(parents=True)
    (tests / "test_apart.py").write_text(
        textwrap.dedent(f"""
            import os
            def test_apart():
                print("apart ran in", os.getpid())
                assert {apart_passes}
        """)
    )
    (tests / "test_rest.py").write_text(f"def test_rest():\n    assert {rest_passes}\n")
    return tmp_path


def test_the_apart_module_runs_once_beside_the_rest(tmp_path, capfd):
    prepared = []
    root = _tree(tmp_path, apart_passes=True, rest_passes=True)
    assert run_tier(
        "demo", ["-s", "-p", "no:cacheprovider"], root, APART, lambda: prepared.append(1)
    )
    out = capfd.readouterr().out
    assert prepared == [1]
    assert out.count("apart ran in") == 1  # not collected again by the rest of the tier
    rest, beside = out.split("== tests/demo/test_apart.py, run beside the rest of tests/demo")
    assert "1 passed" in rest and "1 passed" in beside
    assert beside.rstrip().endswith("(exit 0)")


def test_a_failure_on_either_side_fails_the_tier(tmp_path, capfd):
    apart_fails = _tree(tmp_path / "a", apart_passes=False, rest_passes=True)
    assert not run_tier("demo", ["-p", "no:cacheprovider"], apart_fails, APART, lambda: None)
    assert "(exit 1):" in capfd.readouterr().out
    rest_fails = _tree(tmp_path / "b", apart_passes=True, rest_passes=False)
    assert not run_tier("demo", ["-p", "no:cacheprovider"], rest_fails, APART, lambda: None)


def test_a_tier_without_apart_modules_runs_in_one_pytest(tmp_path, capfd):
    root = _tree(tmp_path, apart_passes=True, rest_passes=True)
    assert run_tier("demo", ["-p", "no:cacheprovider"], root, {}, lambda: 1 / 0)
    out = capfd.readouterr().out
    assert "run beside" not in out and "2 passed" in out
