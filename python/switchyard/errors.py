"""Errors the Switchyard SDK raises."""


class SwitchyardError(Exception):
    """Base class of the SDK's own errors."""


class APIError(SwitchyardError):
    """The forwarder refused a request; status is the HTTP status."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class UnknownEndpointError(APIError):
    """The endpoint is not known to the forwarder (HTTP 404)."""


class AuthenticationError(APIError):
    """The forwarder refused the token (HTTP 401) or the token lacks a right (403)."""


class TaskFailed(SwitchyardError):
    """A task ended without a Python result or exception of its own: its
    worker died, it timed out, or the forwarder no longer knows it."""

    def __init__(self, task_id, state, error):
        super().__init__(f"task {task_id} {state}: {error}")
        self.task_id, self.state, self.error = task_id, state, error


class TaskCancelled(TaskFailed):
    """The task was cancelled on the service side (another client, the CLI)."""


class RemoteTraceback(Exception):
    """Set as __cause__ of an exception raised by a remote call, like
    concurrent.futures.ProcessPoolExecutor does: printing the exception
    shows where it happened on the worker."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return f'\n"""\n{self.tb}"""'
