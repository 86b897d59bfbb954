"""Errors that the command line reports without a traceback: they name the file and the problem."""


class LipsyncError(Exception):
    """A failure the user can act on; the message says what went wrong and where."""


class InputError(LipsyncError):
    """An input file is missing, truncated, corrupt or not what the config says it is."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TrainingError(LipsyncError):
    """Training cannot go on (for example a non-finite loss)."""
