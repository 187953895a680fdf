"""What every adapter shares: its name, breaker and closing, delegated to its one client."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import httpx

from adapters.transport.breaker import CircuitBreaker


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Client(Protocol):
    @property
    def breaker(self) -> CircuitBreaker: ...

    @property
    def http(self) -> httpx.AsyncClient: ...

    async def aclose(self) -> None: ...


ConfigT = TypeVar("ConfigT", bound=_Named)


class ClientBackedAdapter(Generic[ConfigT]):
    """Base of the adapters: each owns one client (REST or SOAP) for the app's life."""

    config: ConfigT
    _client: _Client

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def breaker(self) -> CircuitBreaker:
        return self._client.breaker

    def http_clients(self) -> list[httpx.AsyncClient]:
        """The HTTP clients the adapter calls through (for tracing to instrument)."""
        return [self._client.http]

    async def aclose(self) -> None:
        await self._client.aclose()
