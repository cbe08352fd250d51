"""The benchmarks' machine note: how idle CPUs wait, read from sysfs (files stand in here)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.stats import idle_policy, percentile


def _files(tmp_path: Path, driver: str | None, poll_ns: str | None) -> tuple[str, str]:
    driver_path, poll_path = tmp_path / "driver", tmp_path / "poll"
    if driver is not None:
        driver_path.write_text(driver + "\n")
    if poll_ns is not None:
        poll_path.write_text(poll_ns + "\n")
    return str(driver_path), str(poll_path)


def test_halting_at_once_is_called_out(tmp_path: Path) -> None:
    note = idle_policy(*_files(tmp_path, "haltpoll", "0"))
    assert "guest_halt_poll_ns 0" in note and "VM exit" in note


def test_polling_guest_shows_its_window(tmp_path: Path) -> None:
    assert idle_policy(*_files(tmp_path, "haltpoll", "200000")) == (
        "cpuidle haltpoll, guest_halt_poll_ns 200000")


def test_other_driver_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert idle_policy(*_files(tmp_path / "a", "intel_idle", None)) == (
        "cpuidle driver intel_idle")
    assert idle_policy(*_files(tmp_path / "b", None, "0")) == "cpuidle driver unknown"


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.99) == 99.0
    assert percentile(samples, 0.5) == 50.0
