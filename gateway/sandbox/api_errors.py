"""The platform's error answers: ``{errorCode, errorMessage[, validationErrors]}`` bodies.

Handlers raise :class:`ApiError`; the endpoint wrapper in :mod:`gateway.sandbox.app` turns it
into the JSON response. Codes and messages are the ones the API reference and the OpenAPI
examples use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of ``validationErrors``: which field, what is wrong, the offending value."""

    field: str
    error: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "error": self.error, "value": self.value}


@dataclass
class ApiError(Exception):
    """An error answer; raised by handlers, rendered by the endpoint wrapper."""

    status: int
    error_code: int
    error_message: str
    validation_errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def to_response(self) -> web.Response:
        body: dict[str, Any] = {"errorCode": self.error_code, "errorMessage": self.error_message}
        if self.validation_errors:
            body["validationErrors"] = [e.to_json() for e in self.validation_errors]
        return web.json_response(body, status=self.status, headers=self.headers)


def bad_request(*errors: FieldError) -> ApiError:
    return ApiError(400, 99400, "Provided data cannot be processed.", list(errors))


def unauthorized_token() -> ApiError:
    return ApiError(401, 99015, "Api token provided is not authorized.")


def invalid_session() -> ApiError:
    return ApiError(401, 20028, "Session is not valid")


def invalid_transfer_token() -> ApiError:
    # The API reference lists 412 for validateTransferToken; the code is plenigo's
    # "Session transfer token unknown".
    return ApiError(412, 20032, "Session transfer token unknown")


def not_found() -> ApiError:
    return ApiError(404, 99404, "Entity for given id does not exist.")


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429,
        99429,
        "The rate limit for this endpoint is reached. Please try again later.",
        headers={"Retry-After": str(retry_after)},
    )


def internal_error() -> ApiError:
    return ApiError(
        500,
        99500,
        "Currently we are not able to answer your request. We are working hard to resolve this "
        "problem.",
    )
