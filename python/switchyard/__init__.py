"""Switchyard SDK: run Python functions on a Switchyard endpoint.

    from switchyard import Executor
    with Executor(endpoint="local") as ex:
        print(ex.submit(pow, 2, 10).result())

See Executor for the options; SWITCHYARD_API and SWITCHYARD_TOKEN give the
forwarder's URL and the token.
"""
from .errors import (APIError, AuthenticationError, RemoteTraceback, SwitchyardError, TaskCancelled,
                     TaskFailed, UnknownEndpointError)
from .executor import MAX_PAYLOAD_BYTES, Executor

__all__ = ["Executor", "MAX_PAYLOAD_BYTES", "SwitchyardError", "APIError", "UnknownEndpointError",
           "AuthenticationError", "TaskFailed", "TaskCancelled", "RemoteTraceback"]
