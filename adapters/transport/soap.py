"""The SOAP base: zeep's ``AsyncClient`` on httpx, the WSDL loaded once, same call policy.

The WSDL is parsed when the client is built (zeep parses synchronously), which the
app does in its lifespan, never inside a request. Calls go through an
``AsyncTransport`` whose async httpx client carries the auth (``httpx.BasicAuth``),
the connection pool and the per-attempt timeout; a short-lived sync client serves
only the WSDL load and is closed right after.

HTTP-level answers that are not SOAP (a 429 or 503 from whatever stands in front of
the service, a 401) are mapped by the same status table as REST before zeep sees
them; SOAP faults are mapped here: ``soap:Server`` is a failure of the upstream
(retried, counted by the breaker), ``ContactNotFound`` is an answer (``None``), any
other ``soap:Client`` fault means we sent something it refuses.
"""

from __future__ import annotations

import contextvars
import importlib.resources
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from zeep import AsyncClient, Settings
from zeep import exceptions as zeep_errors
from zeep.helpers import serialize_object
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport

from adapters.config import SoapCrmConfig
from adapters.errors import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from adapters.transport.auth import basic_auth
from adapters.transport.breaker import CircuitBreaker
from adapters.transport.rest import (
    USER_AGENT,
    Action,
    observe,
    policy_for,
    rule_for_exception,
    rule_for_status,
)
from adapters.transport.retry import parse_retry_after
from adapters.transport.telemetry import NO_TELEMETRY, Telemetry

__all__ = ["NOT_FOUND_FAULTS", "SoapClient", "packaged_wsdl"]

logger = logging.getLogger(__name__)

# Faults that mean "no such record": answered as None, never raised.
NOT_FOUND_FAULTS = frozenset({"ContactNotFound"})
_REASON = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_SERVICE = "ContactService"
_PORT = "ContactServicePort"
# The attempt's share of the call budget, for the transport to hand to httpx.
_attempt_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "soap_attempt_timeout", default=None
)


def packaged_wsdl() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("adapters").joinpath("wsdl", "contacts.wsdl")


class _Transport(AsyncTransport):
    """zeep's async transport, minus its debug logging of whole envelopes (they hold
    customer data), plus the status table and the per-attempt timeout."""

    def __init__(
        self,
        upstream: str,
        client: httpx.AsyncClient,
        wsdl_client: httpx.Client,
        telemetry: Telemetry = NO_TELEMETRY,
    ):
        super().__init__(client=client, wsdl_client=wsdl_client)  # type: ignore[no-untyped-call]
        self.upstream = upstream
        self.telemetry = telemetry
        # AsyncTransport replaced the clients' headers with zeep's User-Agent.
        client.headers["User-Agent"] = USER_AGENT

    async def post(self, address: str, message: bytes, headers: dict[str, str]) -> httpx.Response:
        timeout = _attempt_timeout.get()
        response = await self.client.post(
            address,
            content=message,
            headers=headers,
            timeout=httpx.Timeout(timeout) if timeout else httpx.USE_CLIENT_DEFAULT,
        )
        self._check(response)
        return response

    def _check(self, response: httpx.Response) -> None:
        observe(self.upstream, self.telemetry, response.headers)
        status = response.status_code
        is_xml = "xml" in response.headers.get("Content-Type", "")
        if status == 200 or (status == 500 and is_xml):
            return  # a reply, or a SOAP fault for zeep to read
        rule = rule_for_status(status)
        if rule.action is Action.RATE_LIMITED:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise UpstreamRateLimited(
                self.upstream, f"HTTP 429 (Retry-After {retry_after}s)", retry_after_s=retry_after
            )
        error = rule.error if rule.action is not Action.NOT_FOUND else None
        raise (error or UpstreamBadResponse)(
            self.upstream, f"HTTP {status}: {rule.description}", status_code=status
        )


class SoapClient:
    """One SOAP service of one upstream; ``call`` runs an operation under the policy."""

    def __init__(
        self,
        config: SoapCrmConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.name = config.name
        self.telemetry = telemetry
        self.policy = policy_for(config, clock=clock)
        auth = basic_auth(config.auth.username, config.auth.password)
        self.http = httpx.AsyncClient(
            auth=auth,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.max_connections),
            follow_redirects=False,
            trust_env=False,
        )
        wsdl_http = httpx.Client(
            auth=auth, timeout=httpx.Timeout(config.timeout_s), trust_env=False
        )
        try:
            transport = _Transport(self.name, self.http, wsdl_http, telemetry)
            # Hardened parsing: no DTDs, entities or network fetches from documents.
            settings = Settings(
                strict=True,
                xml_huge_tree=False,
                forbid_dtd=True,
                forbid_entities=True,
                forbid_external=True,
            )
            if config.wsdl_path is not None:
                self.zeep = AsyncClient(  # type: ignore[no-untyped-call]
                    config.wsdl_path, transport=transport, settings=settings
                )
            else:
                with importlib.resources.as_file(packaged_wsdl()) as path:
                    self.zeep = AsyncClient(  # type: ignore[no-untyped-call]
                        str(path), transport=transport, settings=settings
                    )
        finally:
            wsdl_http.close()
        binding = self.zeep.wsdl.services[_SERVICE].ports[_PORT].binding
        # The WSDL's own address is the sample's default; the configured one wins.
        # (zeep 4.3's AsyncClient.create_service builds a *sync* proxy: build it here.)
        self.service = AsyncServiceProxy(  # type: ignore[no-untyped-call]
            self.zeep, binding, address=f"{config.base}{config.endpoint_path}"
        )

    @property
    def breaker(self) -> CircuitBreaker:
        return self.policy.breaker

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(self, operation: str, **params: Any) -> Any:
        """The operation's result as plain dicts and lists, or None for a not-found fault."""
        method: Callable[..., Any] = getattr(self.service, operation)
        label = f"SOAP {operation}"

        async def attempt(slice_s: float) -> Any:
            token = _attempt_timeout.set(slice_s)
            try:
                result = await method(**params)
            except UpstreamError:
                raise
            except zeep_errors.Fault as exc:
                return self._fault(label, exc)
            except httpx.HTTPError as exc:
                rule = rule_for_exception(exc)
                if rule is None or rule.error is None:
                    raise
                raise rule.error(self.name, f"{label}: {rule.description}") from exc
            except zeep_errors.ValidationError:
                # zeep refused to serialise *our* request: a bug here, not an upstream
                # failure, and nothing was sent.
                raise ValueError(f"{label}: request does not fit the WSDL") from None
            except zeep_errors.TransportError as exc:
                if isinstance(exc.__context__, zeep_errors.XMLSyntaxError):
                    raise UpstreamBadResponse(self.name, f"{label}: malformed XML") from None
                raise UpstreamUnavailable(
                    self.name, f"{label}: HTTP {exc.status_code}", status_code=exc.status_code
                ) from None
            except (zeep_errors.Error, ValueError, TypeError) as exc:
                # The reply no longer fits the WSDL (renamed elements, wrong types).
                # Not chained: zeep's messages can quote the document.
                self.telemetry.drift(self.name, f"{operation}(reply)", "unreadable")
                raise UpstreamBadResponse(
                    self.name, f"{label}: reply does not fit the WSDL ({type(exc).__name__})"
                ) from None
            finally:
                _attempt_timeout.reset(token)
            return serialize_object(result, target_cls=dict)  # type: ignore[no-untyped-call]

        return await self.policy.run(label, attempt)

    def _fault(self, label: str, fault: Any) -> None:
        code = str(fault.code or "")
        # Only a fault's leading token ("ContactNotFound: …"): the rest is free text
        # that may quote what was asked for.
        reason = str(fault.message or "").split(":", 1)[0].strip()
        if not _REASON.fullmatch(reason):
            reason = "unspecified"
        if code.endswith("Client") and reason in NOT_FOUND_FAULTS:
            return
        if code.endswith("Server"):
            raise UpstreamUnavailable(self.name, f"{label}: server fault ({reason})")
        raise UpstreamBadResponse(self.name, f"{label}: fault {code} ({reason})")
