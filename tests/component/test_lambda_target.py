"""The AWS Lambda target: the Invoke API's answers mapped onto results and InvokeError classes.

Failure paths run against `esm.testing.FakeLambda`, a hand-written fake of the Invoke API, because
no emulator produces function errors, throttles or 413 (../shared/TESTING.md); the happy path also
runs against moto's Lambda API.
"""

from __future__ import annotations

import io
import json
import socket
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from esm.aws import ClientFactory
from esm.config import AwsConfig, FunctionConfig
from esm.errors import InvokeFatalError, InvokeServiceError, InvokeThrottledError, PayloadTooLargeError
from esm.targets.base import Invocation
from esm.targets.lambda_ import LambdaInvoker
from esm.testing import MAX_INVOKE_BYTES, FakeCall, FakeLambda, FakeReply, replies
from tests.conftest import ACCOUNT, REGION, unique


@pytest.fixture
async def fake() -> AsyncIterator[FakeLambda]:
    """A running fake Lambda Invoke API."""
    async with FakeLambda(region=REGION, account=ACCOUNT) as server:
        yield server


def lambda_invoker(endpoint: str, target: str, *, timeout: float | None = None) -> LambdaInvoker:
    """A LambdaInvoker for `target` (name or ARN) on the given endpoint."""
    clients = ClientFactory(AwsConfig(region=REGION, endpoint_url=endpoint))
    fn = FunctionConfig.model_validate({"lambda": target, "timeout": timeout})
    return LambdaInvoker(target, fn, clients=clients, logger=structlog.get_logger())


def invocation(event: Any) -> Invocation:
    """An invocation of `event` with a fresh request id."""
    return Invocation(payload=json.dumps(event).encode(), event=event, request_id=str(uuid.uuid4()))


class TestAnswers:
    """What the function answered comes back as a value."""

    async def test_success_payload_and_executed_version(self, fake: FakeLambda) -> None:
        """A successful invocation returns the function's payload, status 200 and the executed version."""
        fake.function("orders", handler=lambda event, call: FakeReply.ok({"got": event}, executed_version="7"))
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            result = await invoker.invoke(invocation({"id": 1}))
        assert result.ok
        assert json.loads(result.payload) == {"got": {"id": 1}}
        assert result.status_code == 200
        assert result.executed_version == "7"
        [call] = fake.calls_to("orders")
        assert call.event == {"id": 1}
        assert call.invocation_type == "RequestResponse"
        assert call.qualifier is None

    async def test_function_error_is_a_value(self, fake: FakeLambda) -> None:
        """A response with FunctionError is returned as a function error carrying the error document."""
        document = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}
        fake.function("orders", handler=replies(FakeReply.function_error(document)))
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            result = await invoker.invoke(invocation({}))
        assert result.function_error == "Unhandled"
        assert json.loads(result.payload) == document
        assert result.status_code == 200

    async def test_qualifier_from_the_arn_is_sent_as_qualifier(self, fake: FakeLambda) -> None:
        """A qualified ARN invokes the unqualified function with the alias as the Qualifier parameter."""
        fake.function("billing", aliases={"live": "3"})
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:billing:live"
        async with lambda_invoker(fake.endpoint, arn, timeout=3) as invoker:
            result = await invoker.invoke(invocation({"a": 1}))
        [call] = fake.calls
        assert (call.function, call.qualifier) == ("billing", "live")
        assert result.executed_version == "3"

    async def test_slow_function_is_waited_for(self, fake: FakeLambda) -> None:
        """A response arriving after a second, within the function timeout, is still returned."""
        fake.function("orders", handler=replies(FakeReply.ok({"done": True}, delay=1.2)))
        async with lambda_invoker(fake.endpoint, "orders", timeout=2) as invoker:
            started = time.monotonic()
            result = await invoker.invoke(invocation({}))
        assert time.monotonic() - started >= 1.2
        assert json.loads(result.payload) == {"done": True}

    async def test_payload_at_the_limit_is_accepted(self, fake: FakeLambda) -> None:
        """A request of exactly 6,291,456 bytes reaches the function."""
        fake.function("orders", handler=lambda event, call: FakeReply.ok({"size": call.size}))
        event = "x" * (MAX_INVOKE_BYTES - 2)
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            result = await invoker.invoke(invocation(event))
        assert json.loads(result.payload) == {"size": MAX_INVOKE_BYTES}


class TestFailuresToReachTheFunction:
    """Errors of the Invoke API raise, classified by error code and HTTP status."""

    @pytest.mark.parametrize(
        ("reply", "code", "outcome"),
        [
            (FakeReply.throttle(), "TooManyRequestsException", "throttled"),
            (FakeReply.service_error(), "ServiceException", "service_error"),
            (
                FakeReply.error(502, "ENILimitReachedException", {"Type": "User", "Message": "x"}),
                "ENILimitReached",
                "service_error",
            ),
            (
                FakeReply.error(502, "EC2ThrottledException", {"Type": "User", "Message": "x"}),
                "EC2Throttled",
                "service_error",
            ),
        ],
    )
    async def test_throttle_and_5xx_are_service_errors(
        self, fake: FakeLambda, reply: FakeReply, code: str, outcome: str
    ) -> None:
        """429 and 5xx raise InvokeServiceError naming the AWS error code; a 429 is a throttle
        (Lambda's Throttles metric: esm_invocations_total{outcome="throttled"})."""
        fake.function("orders", handler=replies(reply))
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            with pytest.raises(InvokeServiceError, match=code) as raised:
                await invoker.invoke(invocation({}))
        assert raised.value.outcome == outcome
        assert isinstance(raised.value, InvokeThrottledError) is (outcome == "throttled")

    async def test_scripted_413_is_payload_too_large(self, fake: FakeLambda) -> None:
        """A 413 RequestEntityTooLargeException raises PayloadTooLargeError."""
        fake.function("orders", handler=replies(FakeReply.too_large()))
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            with pytest.raises(PayloadTooLargeError, match="RequestEntityTooLargeException"):
                await invoker.invoke(invocation({}))

    async def test_request_over_6_mb_is_payload_too_large(self, fake: FakeLambda) -> None:
        """A request one byte over 6,291,456 bytes is refused with 413 before the function runs."""
        fake.function("orders")
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            with pytest.raises(PayloadTooLargeError, match="413"):
                await invoker.invoke(invocation("x" * (MAX_INVOKE_BYTES - 1)))
        assert fake.calls == []

    async def test_unknown_function_is_fatal(self, fake: FakeLambda) -> None:
        """Invoking a function that does not exist raises InvokeFatalError with ResourceNotFoundException."""
        async with lambda_invoker(fake.endpoint, "missing", timeout=3) as invoker:
            with pytest.raises(InvokeFatalError, match="ResourceNotFoundException"):
                await invoker.invoke(invocation({}))

    async def test_bad_request_is_fatal(self, fake: FakeLambda) -> None:
        """A payload that is not JSON is refused with InvalidRequestContentException, a fatal error."""
        fake.function("orders")
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            with pytest.raises(InvokeFatalError, match="InvalidRequestContentException"):
                await invoker.invoke(Invocation(payload=b"{not json", event=None, request_id="r-1"))

    async def test_connection_refused_is_a_service_error(self) -> None:
        """An endpoint that refuses connections raises InvokeServiceError."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        async with lambda_invoker(f"http://127.0.0.1:{port}", "orders", timeout=3) as invoker:
            with pytest.raises(InvokeServiceError):
                await invoker.invoke(invocation({}))

    async def test_the_invoker_does_not_retry(self, fake: FakeLambda) -> None:
        """A throttled invocation is attempted once: retrying is the engine's decision."""
        fake.function("orders", handler=replies(FakeReply.throttle(), FakeReply.ok({})))
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            with pytest.raises(InvokeServiceError):
                await invoker.invoke(invocation({}))
            assert len(fake.calls) == 1
            assert (await invoker.invoke(invocation({}))).ok


class TestTimeout:
    """The function timeout is configured, or learned from GetFunctionConfiguration."""

    async def test_timeout_is_learned_from_the_function_configuration(self, fake: FakeLambda) -> None:
        """Without a configured timeout the invoker reads the function's Timeout when entered."""
        fake.function("orders", timeout=42)
        invoker = lambda_invoker(fake.endpoint, "orders")
        assert invoker.timeout is None
        async with invoker:
            assert invoker.timeout == 42.0

    async def test_configured_timeout_wins(self, fake: FakeLambda) -> None:
        """A configured timeout is used as it is."""
        fake.function("orders", timeout=42)
        async with lambda_invoker(fake.endpoint, "orders", timeout=5) as invoker:
            assert invoker.timeout == 5.0

    async def test_unknown_timeout_is_logged_and_left_unset(self, fake: FakeLambda) -> None:
        """When GetFunctionConfiguration fails the timeout stays unknown and a warning names the error code."""
        with capture_logs() as logs:
            async with lambda_invoker(fake.endpoint, "missing") as invoker:
                assert invoker.timeout is None
        [entry] = [e for e in logs if e["event"] == "function_timeout_unknown"]
        assert entry["log_level"] == "warning"
        assert entry["error_type"] == "ResourceNotFoundException"


class TestFakeLambdaScripts:
    """The fake's scripting helpers behave as documented."""

    async def test_handler_sees_the_call(self, fake: FakeLambda) -> None:
        """A scripted handler gets the parsed event and the recorded call."""
        seen: list[FakeCall] = []

        def handler(event: Any, call: FakeCall) -> FakeReply:
            seen.append(call)
            return FakeReply.ok(None)

        fake.function("orders", handler=handler)
        async with lambda_invoker(fake.endpoint, "orders", timeout=3) as invoker:
            result = await invoker.invoke(invocation([1, 2]))
        assert result.payload == b"null"
        assert seen == fake.calls
        assert seen[0].event == [1, 2]


class TestMoto:
    """The happy path against moto's Lambda API (no Docker: it echoes the payload, TESTING.md item 7)."""

    async def test_invoke_on_moto_echoes_the_payload(self, moto_endpoint: str, clients: ClientFactory) -> None:
        """A function created in moto is invoked, its timeout learned and the echoed payload returned."""
        async with aiohttp.ClientSession() as http:
            response = await http.post(f"{moto_endpoint}/moto-api/config", json={"lambda": {"use_docker": False}})
            assert response.ok
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
        async with clients.client("iam") as iam:
            role = await iam.create_role(RoleName=unique("esm-fn-role"), AssumeRolePolicyDocument=json.dumps(trust))
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("lambda_function.py", "def handler(event, context):\n    return event\n")
        name = unique("esm-echo")
        async with clients.client("lambda") as client:
            await client.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role["Role"]["Arn"],
                Handler="lambda_function.handler",
                Code={"ZipFile": code.getvalue()},
                Timeout=7,
            )
        fn = FunctionConfig.model_validate({"lambda": name})
        invoker = LambdaInvoker(name, fn, clients=clients, logger=structlog.get_logger())
        event = {"Records": [{"messageId": "m-1", "body": "hello"}]}
        async with invoker:
            assert invoker.timeout == 7.0
            result = await invoker.invoke(invocation(event))
        assert result.ok
        assert json.loads(result.payload) == event
