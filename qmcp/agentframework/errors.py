"""Every error qmcp raises, rooted in `QmcpError` and split by who must act.

* `UserInputError` — the caller's mistake (bad config, missing slot, unknown model, missing key).
  The CLI prints these as one line without a traceback.
* `ModelError` — the model or its provider failed. `TransientModelError` is retried with
  backoff; `PermanentModelError` fails the step at once.
* `RunError` — the run itself ended abnormally (timeout, cancellation, non-determinism, another
  process owning the execution, the database failing under it).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "BudgetExceededError",
    "ConflictError",
    "DatabaseUnavailableError",
    "ExecutionBusyError",
    "ExecutionPaused",
    "ExpiredError",
    "HumanRejectedError",
    "HumanTimeoutError",
    "InvalidConfigError",
    "LeaseLostError",
    "MalformedOutputError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "MissingSlotError",
    "MixinError",
    "ModelError",
    "ModelNotInstalledError",
    "NonDeterminismError",
    "NotFoundError",
    "PermanentModelError",
    "PermissionDeniedError",
    "PlanTooLargeError",
    "QmcpError",
    "RateLimitedError",
    "RunCancelledError",
    "RunError",
    "RunTimeoutError",
    "StepFailedError",
    "StorageError",
    "TransientModelError",
    "UnknownModelError",
    "UntrustedDefinitionError",
    "UserInputError",
    "did_you_mean",
]


class QmcpError(Exception):
    """Root of every error raised by qmcp."""


class UserInputError(QmcpError, ValueError):
    """The input is wrong; the message says what and how to fix it."""


class InvalidConfigError(UserInputError):
    """An agent, topology or run configuration is invalid."""

    @classmethod
    def listing(cls, label: str, problems: list[str], more: int = 0) -> InvalidConfigError:
        """One line per problem, the first `MAX_LISTED_PROBLEMS` of them, then how many more.

        A file of 50,000 invalid entries is better told by 20 lines and a count than by 50,000.
        """
        more += max(0, len(problems) - MAX_LISTED_PROBLEMS)
        tail = [f"{label}: and {more:,} more"] if more else []
        return cls("\n".join([*problems[:MAX_LISTED_PROBLEMS], *tail]))


MAX_LISTED_PROBLEMS = 20
"""The most problems an `InvalidConfigError.listing` lists, one per line."""


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`"did you mean 'temperature'? "` when `word` looks like a typo of one of `choices`, else "":
    a hint to put in a message before the list of what is allowed."""
    import difflib

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


class MissingSlotError(UserInputError):
    """A topology is missing agents for slots it requires."""


class UnknownModelError(UserInputError):
    """A model string names no known provider or model."""


class MissingAPIKeyError(UserInputError):
    """A provider needs an API key that is not set."""


class ModelNotInstalledError(UserInputError):
    """A local model's runtime or weights are not installed."""


class MissingExtraError(UserInputError):
    """A feature needs an optional part of qmcp that is not installed (`pip install 'qmcp[EXTRA]'`)."""


class NotFoundError(UserInputError):
    """A named agent, topology or execution does not exist."""


class MixinError(UserInputError):
    """A capability (mixin) is unknown, misconfigured or has circular dependencies."""


class ConflictError(UserInputError):
    """The request conflicts with what is stored: a human request id taken, a request already answered."""


class ExpiredError(UserInputError):
    """A human request's time to answer has passed."""


class DatabaseUnavailableError(UserInputError):
    """The database URL cannot work: a missing directory, a read-only file, not a database, no server."""


class PermissionDeniedError(UserInputError):
    """A remote caller asked for something only the server's operator decides (a path, a model, a
    process setting), or for more than the operator allows."""


class PlanTooLargeError(UserInputError):
    """A plan has more steps than the server's tools take (`QMCP_TOOL_MAX_PLAN_STEPS`)."""


class RateLimitedError(UserInputError):
    """A server-wide per-minute cap is reached: the same request may succeed after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UntrustedDefinitionError(UserInputError):
    """A stored definition would run code (a tool, an MCP command, ...) that nobody has trusted.

    `trust_command` is the `qmcp` command line (without `qmcp`) that trusts it, so that the CLI
    can show it with its own global options.
    """

    def __init__(self, problem: str, trust_command: tuple[str, ...]) -> None:
        self.problem = problem
        self.trust_command = trust_command
        super().__init__(self.render(shlex.join(["qmcp", *trust_command])))

    def render(self, command: str) -> str:
        """The one-line message, naming `command` as the way to trust the definition."""
        return f"{self.problem}; review it, then trust it with: {command}"


class ModelError(QmcpError):
    """A model call failed."""

    def __init__(self, message: str, *, model: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.status_code = status_code
        self.attempts = 1


class TransientModelError(ModelError):
    """Rate limit, overload, 5xx, timeout or dropped connection: worth retrying."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, model=model, status_code=status_code)
        self.retry_after = retry_after


class PermanentModelError(ModelError):
    """Authentication failure or rejected request: retrying cannot help."""


class MalformedOutputError(ModelError):
    """The model's reply could not be parsed into the structure the step asked for."""


class RunError(QmcpError):
    """A run ended abnormally."""


class RunTimeoutError(RunError, TimeoutError):
    """The run exceeded `RunConfig.timeout_seconds`; it stays resumable."""


class RunCancelledError(RunError):
    """The run was cancelled; it stays resumable."""


class BudgetExceededError(RunError):
    """The run spent its token or cost budget (`max_tokens`, `max_cost_usd`); it ends `failed` and a
    resume with a higher budget goes on without paying again for the steps done."""

    def __init__(self, message: str, *, spent: float, budget: float, unit: str) -> None:
        super().__init__(message)
        self.spent = spent
        self.budget = budget
        self.unit = unit


class ExecutionBusyError(RunError):
    """Another live process owns the execution (holds its lease); wait for it or take it over."""


class LeaseLostError(RunError):
    """This process no longer owns the execution: it stops before its next model call and writes nothing."""

    @classmethod
    def taken_over(cls, execution_id: object) -> LeaseLostError:
        """The error of a step write that another owner's claim refused."""
        return cls(
            f"execution {execution_id} was taken over by another process; this one stopped without writing"
        )


class StorageError(RunError):
    """The database failed under a running execution (disk full, file-size limit, connection lost)."""


class NonDeterminismError(RunError):
    """On replay, a recorded step belongs to another slot than the one the topology asked for."""


class ExecutionPaused(RunError):
    """A step waits for a human; the execution is `paused` until the request is answered."""

    def __init__(self, request_id: str, prompt: str) -> None:
        super().__init__(f"waiting for a human to answer request {request_id}: {prompt}")
        self.request_id = request_id
        self.prompt = prompt


class HumanRejectedError(RunError):
    """A human rejected a step at an approval gate."""


class HumanTimeoutError(RunError):
    """Nobody answered a human request before its timeout."""


class StepFailedError(RunError):
    """An agent step failed after its retries."""

    def __init__(self, key: str, cause: BaseException, attempts: int = 1) -> None:
        kind = {
            TransientModelError: "transient model error, retries exhausted",
            PermanentModelError: "permanent model error, not retried",
            MalformedOutputError: "malformed model output",
        }.get(type(cause), type(cause).__name__)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"step {key!r} failed{tries} ({kind}): {cause}")
        self.key = key
        self.cause = cause
        self.attempts = attempts
