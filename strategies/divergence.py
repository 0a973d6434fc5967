"""Saying so when a run diverges (issue 20 §1, DESIGN "Failure behaviour").

:class:`DivergenceWatch` reads each round's global training loss and, where the app evaluates
the global model, its accuracy. It warns once, naming the likely cause (the server step size)
and the setting to change, when

* the training loss rises by an order of magnitude: above ``loss_factor`` (10) times the
  first round's (a drift's jump, 3-9x on the shipped scenarios, stays below), or turns
  non-finite while clients reply;
* the accuracy stays at its initial value (chance, for an untrained model) within
  ``chance_margin`` for the first ``patience`` rounds with replies;
* the global model's evaluated loss (where the app's evaluation reports a ``loss``) stays
  above ``eval_loss_factor`` (3) times the initial model's (round 0) for ``eval_loss_rounds``
  (2) evaluated rounds in a row: a several-fold rise that lasts. A server step that is too
  large shows here first: the clients' own training loss hardly moves (local training repairs
  the global model within the round), while the global model's loss jumps 5-15x and stays up
  for rounds (RESULTS.md §11: server ``adam`` at lr 1, Flash's published drift test, FedHyper-G's
  raw hypergradient). A drift's jump on the shipped scenarios (up to 4.3x the initial loss on
  mnist1d-local, 3.3x on drift-recurring, 2.7x on drift-digits) lasts one evaluated round: the
  round after is at most 2.7x. An oscillating step size is caught only once the loss stays up
  for two rounds in a row (one value per round cannot tell an oscillation from a recurring
  drift).

The message goes to Flower's log, the round's info (``divergence`` = 1 in that round) and,
through the simulations' server app, to ``summary.json`` (``divergence``).
"""

from __future__ import annotations

import math
from logging import WARNING

from flwr.common.logger import log as flwr_log


class DivergenceWatch:
    """Watch a run's loss and accuracy; :attr:`message` is set once it diverges."""

    def __init__(
        self,
        setting: str,
        *,
        loss_factor: float = 10.0,
        patience: int = 5,
        chance_margin: float = 0.02,
        eval_loss_factor: float = 3.0,
        eval_loss_rounds: int = 2,
    ) -> None:
        self.setting = setting
        self.loss_factor = float(loss_factor)
        self.patience = int(patience)
        self.chance_margin = float(chance_margin)
        self.eval_loss_factor = float(eval_loss_factor)
        self.eval_loss_rounds = int(eval_loss_rounds)
        self.first_loss: float | None = None
        self.initial_accuracy: float | None = None
        self.initial_eval_loss: float | None = None
        self.flat_rounds = 0
        self.high_eval_rounds = 0
        self.message: str | None = None

    def _warn(self, text: str) -> bool:
        if self.message is not None:
            return False
        self.message = (
            f"{text}. Likely cause: the server step size; change {self.setting}"
            " (a smaller value when the loss rises, a larger one when nothing is learnt)"
        )
        flwr_log(WARNING, "fedadapt: the run looks divergent: %s", self.message)
        return True

    def observe_loss(self, server_round: int, loss: float, replies: int) -> bool:
        """The round's mean training loss over ``replies`` accepted replies; True = warned now."""
        if replies <= 0:
            return False
        if not math.isfinite(loss):
            return self._warn(f"round {server_round}: the clients' training loss is {loss}")
        if self.first_loss is None:
            self.first_loss = loss
            return False
        if self.first_loss > 0 and loss > self.loss_factor * self.first_loss:
            return self._warn(
                f"round {server_round}: the global training loss rose to {loss:.4g}, more than "
                f"{self.loss_factor:g}x its first round's {self.first_loss:.4g}"
            )
        return False

    def observe_eval_loss(self, server_round: int, loss: float) -> bool:
        """The global model's evaluated loss after ``server_round`` (round 0: the initial
        model, the reference: a run resumed past round 0 has none, and this rule stays off, since
        a trained model's loss is no reference for a drift's jump); True = warned now."""
        if server_round == 0:
            self.initial_eval_loss = loss if math.isfinite(loss) else None
            return False
        if self.initial_eval_loss is None:
            return False
        if not math.isfinite(loss):
            return self._warn(f"round {server_round}: the global model's evaluated loss is {loss}")
        if self.initial_eval_loss > 0 and loss > self.eval_loss_factor * self.initial_eval_loss:
            self.high_eval_rounds += 1
            if self.high_eval_rounds >= self.eval_loss_rounds:
                return self._warn(
                    f"round {server_round}: the global model's evaluated loss ({loss:.4g}) has stayed "
                    f"above {self.eval_loss_factor:g}x the initial model's "
                    f"{self.initial_eval_loss:.4g} for {self.high_eval_rounds} rounds"
                )
        else:
            self.high_eval_rounds = 0
        return False

    def observe_accuracy(self, server_round: int, accuracy: float) -> bool:
        """The global model's accuracy after ``server_round`` (round 0: the initial model)."""
        if not math.isfinite(accuracy):
            return False
        if server_round == 0 or self.initial_accuracy is None:
            self.initial_accuracy = accuracy
            return False
        if self.flat_rounds < 0:
            return False  # it learnt once: a later drop is drift, not divergence
        if accuracy <= self.initial_accuracy + self.chance_margin:
            self.flat_rounds += 1
            if self.flat_rounds >= self.patience:
                return self._warn(
                    f"round {server_round}: the accuracy has stayed at its initial "
                    f"{self.initial_accuracy:.3f} (chance) for {self.flat_rounds} rounds while "
                    "clients reply"
                )
        else:
            self.flat_rounds = -1
        return False


__all__ = ["DivergenceWatch"]
