"""AWS client construction on aiobotocore, from the standard credential chain.

Credentials are never read from esm's configuration: the default chain (environment, shared
files, IRSA web identity, EKS Pod Identity container credentials, instance metadata) applies.
botocore's own retries are turned off; esm retries with tenacity where the semantics are known,
so every retry shows in metrics and logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, overload

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from esm.config import AwsConfig

if TYPE_CHECKING:
    from types_aiobotocore_lambda import LambdaClient
    from types_aiobotocore_sqs import SQSClient

__all__ = ["ClientFactory"]


class ClientFactory:
    """Creates aiobotocore clients that share one session and the configured region/endpoint."""

    def __init__(self, aws: AwsConfig, *, default_region: str | None = None) -> None:
        self._aws = aws
        self._session: AioSession = get_session()
        if aws.profile:
            self._session.set_config_variable("profile", aws.profile)
        self._default_region = default_region

    @property
    def region(self) -> str | None:
        """The configured region, else the one the standard chain resolves, else the fallback."""
        return self._aws.region or self._session.get_config_variable("region") or self._default_region

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint for a service: its own entry in `aws.endpoints`, else `aws.endpoint_url`."""
        for name, url in self._aws.endpoints.items():
            if name == service:
                return url
        return self._aws.endpoint_url

    @overload
    def client(
        self, service: Literal["sqs"], *, read_timeout: float = ..., max_pool: int = ...
    ) -> contextlib.AbstractAsyncContextManager[SQSClient]: ...

    @overload
    def client(
        self, service: Literal["lambda"], *, read_timeout: float = ..., max_pool: int = ...
    ) -> contextlib.AbstractAsyncContextManager[LambdaClient]: ...

    @overload
    def client(
        self, service: str, *, read_timeout: float = ..., max_pool: int = ...
    ) -> contextlib.AbstractAsyncContextManager[Any]: ...

    def client(
        self, service: str, *, read_timeout: float = 60.0, max_pool: int = 50
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """An async context manager yielding a client for `service` (botocore retries disabled)."""
        return self._client(service, read_timeout, max_pool)

    @contextlib.asynccontextmanager
    async def _client(self, service: str, read_timeout: float, max_pool: int) -> AsyncIterator[Any]:
        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=read_timeout,
            connect_timeout=10,
            max_pool_connections=max_pool,
        )
        async with self._session.create_client(
            service,  # type: ignore[call-overload]  # the service name is a runtime value here
            region_name=self.region,
            endpoint_url=self.endpoint_for(service),
            config=config,
        ) as client:
            yield client
