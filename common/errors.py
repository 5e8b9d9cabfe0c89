"""What stops a run early, as the user sees it.

``UserError``: a bad config, a missing or corrupt file or dataset, a bad checkpoint. The CLI prints it as a single
line and exits with status 2 before anything is written.
``Diverged``: the training loss became NaN or infinite. The run stops at once and its result file says
``"status": "diverged"`` (no metrics); the CLI prints one line and exits with status 3.
"""


class UserError(Exception):
    """An error in what the user asked for (not a bug): printed as one line, exit code 2."""


class Diverged(Exception):
    """The training loss is not finite (on any process): the run stops, its result records where (exit code 3)."""

    def __init__(self, epoch: int, step: int, loss: float):
        super().__init__(f"training diverged: loss {loss} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.loss = epoch, step, loss
        self.result = None  # the result file written for it (by the process that writes results)
        self.kept = None  # ... or the finished result it did not replace
