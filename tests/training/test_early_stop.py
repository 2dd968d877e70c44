"""The stop rule the supervised trainers share (``optin.training.runs.early_stop``)."""

from optin.training.runs import CEILING_EPOCHS, early_stop


def test_goes_on_while_improving_and_stops_after_patience() -> None:
    assert early_stop([0.5, 0.4, 0.3], bad_epochs=0, patience=3) is None
    assert early_stop([0.3, 0.3, 0.3], bad_epochs=2, patience=3) is None
    reason = early_stop([0.3, 0.3, 0.3, 0.3], bad_epochs=3, patience=3)
    assert reason is not None and "not better for 3 epochs" in reason


def test_stops_at_zero_error_only_after_the_ceiling_epochs() -> None:
    assert CEILING_EPOCHS == 2
    assert early_stop([0.5, 0.0], bad_epochs=0, patience=10) is None  # one perfect epoch
    assert early_stop([0.0, 0.1], bad_epochs=1, patience=10) is None  # not in a row
    reason = early_stop([0.5, 0.0, 0.0], bad_epochs=1, patience=10)
    assert reason is not None and "floor" in reason
    assert early_stop([0.01, 0.01], bad_epochs=1, patience=10) is None  # near is not zero
