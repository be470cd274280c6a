"""Progress of long training stages: rate and ETA lines off a terminal, tqdm on one."""

from __future__ import annotations

import logging

import pytest

from nerkit.training.progress import progress, stage


class FakeClock:
    """Ten seconds pass per reading: the test decides what time it is, not the machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


def test_off_a_terminal_progress_logs_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nerkit.training.progress"):
        items = list(
            progress(
                range(12),
                12,
                "epoch 1/3 training",
                terminal=False,
                clock=FakeClock(),
                interval_s=30.0,
                detail=lambda: "loss 0.5000",
            )
        )
    assert items == list(range(12))
    lines = caplog.messages
    assert lines[0] == "epoch 1/3 training: 12 batches"
    # One reading per item after the start: 10 s each, a line every 30 s.
    assert lines[1] == (
        "epoch 1/3 training: 3/12 batches (25%), 0.10 batches/s, ETA 1 min 30 s, loss 0.5000"
    )
    assert len(lines) == 1 + 3 + 1  # start, after 3, 6 and 9 items, done
    assert lines[-1] == "epoch 1/3 training: done, 12 batches in 2 min 10 s"


def test_on_a_terminal_progress_is_a_bar(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="nerkit.training.progress"):
        assert list(progress(iter("abc"), 3, "validation", terminal=True)) == ["a", "b", "c"]
    assert caplog.messages == []
    assert "validation:   0%|          | 0/3" in capsys.readouterr().err


def test_a_stage_logs_start_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="nerkit.training.progress"),
        stage("exporting to ONNX (fp32)", clock=FakeClock()),
    ):
        pass
    assert caplog.messages == [
        "exporting to ONNX (fp32) ...",
        "exporting to ONNX (fp32): done in 10 s",
    ]
