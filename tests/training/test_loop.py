"""The shared supervised loop reads the progress that older runs saved."""

import math

from optin.training.loop import _restored, initial_progress


def test_a_classifier_run_saved_before_the_shared_loop_resumes_with_its_best_as_an_error():
    old = {"epoch": 3, "step": 0, "loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0,
           "best": {"accuracy": 0.75, "loss": 0.4, "epoch": 2}, "bad_epochs": 1,
           "history": [], "finished": False}
    state = _restored(old)
    assert state["best"] == {"error": 0.25, "loss": 0.4, "epoch": 2}
    assert state["stop"] == "max epochs" and state["epoch"] == 3 and state["bad_epochs"] == 1


def test_an_xvector_run_keeps_its_eer_and_a_fresh_run_has_no_best():
    state = _restored({**initial_progress(), "best": {"eer": 0.1, "loss": 1.0, "epoch": 4}})
    assert state["best"] == {"error": 0.1, "loss": 1.0, "epoch": 4}
    never = _restored({"best": {"accuracy": -1.0, "loss": math.inf, "epoch": -1}})
    assert never["best"]["error"] == math.inf
    assert _restored(initial_progress()) == initial_progress()
