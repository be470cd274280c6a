"""Every command line's --help names the command as it is typed and reads as plain text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nerkit import models_cli
from nerkit.pipeline import start
from nerkit.training import cli as train_cli

COMMANDS: list[tuple[Callable[[list[str]], int], list[str], str]] = [
    (train_cli.main, [], "nerkit-train"),
    (train_cli.main, ["train"], "nerkit-train train"),
    (train_cli.main, ["train-default"], "nerkit-train train-default"),
    (train_cli.main, ["evaluate"], "nerkit-train evaluate"),
    (models_cli.main, [], "nerkit-models"),
    (models_cli.main, ["list"], "nerkit-models list"),
    (models_cli.main, ["publish"], "nerkit-models publish"),
    (start.main, [], "python -m nerkit.pipeline.start"),
]


@pytest.mark.parametrize(("main", "argv", "usage"), COMMANDS, ids=[c[2] for c in COMMANDS])
def test_help_is_plain_text_under_the_commands_name(
    main: Callable[[list[str]], int],
    argv: list[str],
    usage: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {usage} ")
    for markup in ("``", ":func:", ":class:", "::\n", "python -m nerkit.models_cli"):
        assert markup not in text
    # A line continued in the docstring stays a continued line, not one run-on line.
    assert "0.85         --must-beat-live" not in text
