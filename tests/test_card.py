"""The model card's training curve reads well for one epoch as for many."""

from __future__ import annotations

from nerkit.training.card import curve_figure
from nerkit.training.train import EpochRecord


def record(epoch: int, loss: float, f1: float) -> EpochRecord:
    return EpochRecord(epoch=epoch, step=10 * epoch, train_loss=loss, validation={"f1": f1},
                       seconds=1.0)  # fmt: skip


def test_one_epoch_is_a_point_on_a_readable_scale() -> None:
    figure = curve_figure([record(1, 0.42, 0.61)])
    loss_axis, f1_axis = figure.axes
    assert f1_axis.get_ylim() == (0.5, 1)
    assert loss_axis.get_ylim()[0] == 0
    assert list(loss_axis.get_xticks()) == [1]
    assert loss_axis.get_xlim() == (0, 2)
    assert [text.get_text() for text in f1_axis.texts] == ["0.610"]


def test_many_epochs_show_whole_epochs() -> None:
    figure = curve_figure([record(e, 1 / e, 0.9 + e / 1000) for e in range(1, 17)])
    loss_axis, f1_axis = figure.axes
    assert list(loss_axis.get_xticks()) == list(range(1, 17))
    assert f1_axis.get_ylim() == (0.8, 1)
