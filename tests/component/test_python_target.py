"""The in-process Python target: Lambda's Python runtime contract, checked against real handlers."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from esm.aws import ClientFactory
from esm.config import AwsConfig, FunctionConfig
from esm.errors import InvokeFatalError
from esm.targets.base import Invocation
from esm.targets.factory import build_invoker
from esm.targets.http import HttpInvoker
from esm.targets.lambda_ import LambdaInvoker
from esm.targets.python import PythonInvoker
from tests.component.handlers import targets

REPO = Path(__file__).resolve().parents[2]
MODULE = "tests.component.handlers.targets"
REGION = "eu-west-1"
ACCOUNT = "210987654321"


def python_invoker(
    handler: str,
    *,
    name: str = "orders",
    timeout: float | None = None,
    memory: int = 256,
    max_threads: int = 4,
    base_dir: Path = REPO,
) -> PythonInvoker:
    """A PythonInvoker for a handler of the test handlers module (or a full `module:function`)."""
    spec = handler if ":" in handler else f"{MODULE}:{handler}"
    fn = FunctionConfig(handler=spec, timeout=timeout, memory=memory, max_threads=max_threads)
    return PythonInvoker(name, fn, base_dir=base_dir, region=REGION, account=ACCOUNT, logger=structlog.get_logger())


def invocation(event: Any) -> Invocation:
    """An invocation of `event` with a fresh request id."""
    return Invocation(payload=json.dumps(event).encode(), event=event, request_id=str(uuid.uuid4()))


@pytest.fixture
def release() -> Iterator[None]:
    """Let `never_returns` handlers end once the test is over."""
    targets.RELEASE.clear()
    yield
    targets.RELEASE.set()


class TestWhatAHandlerSees:
    """The event and the Lambda-compatible context (DESIGN.md §2)."""

    @pytest.mark.parametrize("handler", ["describe", "describe_async"])
    async def test_event_and_context_attributes(self, handler: str) -> None:
        """Sync and async handlers get the event and every context attribute the Lambda runtime provides."""
        event = {"Records": [{"messageId": "m-1", "body": "hello"}]}
        call = invocation(event)
        async with python_invoker(handler, timeout=5) as invoker:
            result = await invoker.invoke(call)
        assert result.ok
        seen = json.loads(result.payload)
        assert seen["event"] == event
        assert seen["aws_request_id"] == call.request_id
        assert seen["function_name"] == "orders"
        assert seen["function_version"] == "$LATEST"
        assert seen["invoked_function_arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders"
        assert seen["memory_limit_in_mb"] == 256
        assert seen["log_group_name"] == "/aws/lambda/orders"
        assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", seen["log_stream_name"])
        assert seen["identity"] is None
        assert seen["client_context"] is None

    async def test_remaining_time_counts_down_from_the_timeout(self) -> None:
        """get_remaining_time_in_millis starts at the timeout and decreases while the handler runs."""
        async with python_invoker("describe", timeout=5) as invoker:
            result = await invoker.invoke(invocation({}))
        first, later = json.loads(result.payload)["remaining"]
        assert 4000 < first <= 5000
        assert later <= first - 40

    async def test_default_timeout_is_three_seconds(self) -> None:
        """Without a configured timeout the handler gets Lambda's default of 3 seconds."""
        invoker = python_invoker("describe")
        assert invoker.timeout == 3.0
        async with invoker:
            result = await invoker.invoke(invocation({}))
        assert 2000 < json.loads(result.payload)["remaining"][0] <= 3000

    async def test_none_is_serialized_as_null(self) -> None:
        """A handler that returns nothing answers the JSON `null`."""
        async with python_invoker("returns_none") as invoker:
            result = await invoker.invoke(invocation({}))
        assert result.ok
        assert result.payload == b"null"

    async def test_decimals_and_unicode_are_serialized_like_the_runtime(self) -> None:
        """Decimal values become JSON numbers and non-ASCII text is kept as UTF-8."""
        async with python_invoker("decimals") as invoker:
            result = await invoker.invoke(invocation({}))
        assert json.loads(result.payload) == {"price": 1.5, "count": 2, "text": "café"}
        assert "café".encode() in result.payload


class TestThreads:
    """Synchronous handlers run off the event loop, in each function's own pool."""

    async def test_sync_handler_does_not_block_the_loop(self) -> None:
        """A handler blocking its thread for 0.5 s leaves the event loop free for other coroutines."""
        ticks: list[float] = []

        async def tick() -> None:
            for _ in range(5):
                await asyncio.sleep(0.02)
                ticks.append(time.monotonic())

        async with python_invoker("block", timeout=2) as invoker:
            started = time.monotonic()
            result, _ = await asyncio.gather(invoker.invoke(invocation({"seconds": 0.5})), tick())
        assert result.ok
        assert ticks[-1] - started < 0.4
        thread = json.loads(result.payload)["thread"]
        assert thread.startswith("esm-fn-orders")
        assert thread != threading.main_thread().name

    async def test_async_handler_runs_on_the_loop(self) -> None:
        """A coroutine handler is awaited on the event loop's thread."""
        async with python_invoker("describe_async") as invoker:
            result = await invoker.invoke(invocation({}))
        assert json.loads(result.payload)["thread"] == threading.current_thread().name

    @pytest.mark.usefixtures("release")
    async def test_stuck_handler_does_not_stop_another_function(self) -> None:
        """A function whose handler never returns times out, while another function keeps answering."""
        stuck = python_invoker("never_returns", name="stuck", timeout=0.5, max_threads=1)
        free = python_invoker("echo", name="free", timeout=1)
        async with stuck, free:
            started = time.monotonic()
            stuck_results = asyncio.gather(*(stuck.invoke(invocation({"n": i})) for i in range(3)))
            free_results = await asyncio.gather(*(free.invoke(invocation({"n": i})) for i in range(10)))
            free_done = time.monotonic() - started
            timed_out = await stuck_results
        assert [json.loads(r.payload) for r in free_results] == [{"n": i} for i in range(10)]
        assert free_done < 0.5
        assert all(r.function_error == "Unhandled" for r in timed_out)
        assert {json.loads(r.payload)["errorType"] for r in timed_out} == {"Sandbox.Timedout"}


class TestTimeout:
    """The function timeout is enforced and reported as Lambda reports it."""

    @pytest.mark.usefixtures("release")
    async def test_sync_handler_timeout_is_a_function_error(self) -> None:
        """A sync handler running past its timeout gives the Sandbox.Timedout function error."""
        call = invocation({})
        async with python_invoker("never_returns", timeout=0.2) as invoker:
            started = time.monotonic()
            result = await invoker.invoke(call)
        assert time.monotonic() - started < 1
        assert result.function_error == "Unhandled"
        assert json.loads(result.payload) == {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {call.request_id} Error: Task timed out after 0.20 seconds",
        }

    async def test_async_handler_is_cancelled_at_the_timeout(self) -> None:
        """A coroutine handler past its timeout is cancelled and the invocation is Sandbox.Timedout."""
        call = invocation({})
        async with python_invoker("slow_async", timeout=0.2) as invoker:
            result = await invoker.invoke(call)
        assert json.loads(result.payload)["errorType"] == "Sandbox.Timedout"
        assert call.request_id in targets.CANCELLED

    async def test_handlers_own_timeout_error_is_an_ordinary_exception(self) -> None:
        """A TimeoutError raised by the handler itself is reported as that exception, not as a Lambda timeout."""
        with capture_logs():
            async with python_invoker("raise_timeout", timeout=2) as invoker:
                result = await invoker.invoke(invocation({}))
        body = json.loads(result.payload)
        assert body["errorType"] == "TimeoutError"
        assert body["errorMessage"] == "database did not answer"


class TestErrors:
    """Exceptions and unserializable answers are function errors, never exceptions of the invoker."""

    async def test_exception_is_an_unhandled_function_error(self) -> None:
        """A raised exception becomes the Python runtime's error document, and its traceback is logged."""
        call = invocation({"id": "o-7"})
        with capture_logs() as logs:
            async with python_invoker("fail") as invoker:
                result = await invoker.invoke(call)
        assert result.function_error == "Unhandled"
        body = json.loads(result.payload)
        assert body["errorType"] == "ValueError"
        assert body["errorMessage"] == "order o-7 is invalid"
        assert body["requestId"] == call.request_id
        assert len(body["stackTrace"]) == 1
        assert 'targets.py", line' in body["stackTrace"][0]
        assert "in fail" in body["stackTrace"][0]
        [entry] = [e for e in logs if e["event"] == "handler_failed"]
        assert entry["log_level"] == "error"
        assert entry["function"] == "orders"
        assert isinstance(entry["exc_info"], ValueError)
        assert "o-7" not in json.dumps({k: v for k, v in entry.items() if k != "exc_info"})

    async def test_unmarshalable_response_is_a_marshal_error(self) -> None:
        """A return value JSON cannot represent gives Runtime.MarshalError."""
        call = invocation({})
        with capture_logs():
            async with python_invoker("unmarshalable") as invoker:
                result = await invoker.invoke(call)
        assert result.function_error == "Unhandled"
        body = json.loads(result.payload)
        assert body["errorType"] == "Runtime.MarshalError"
        assert body["errorMessage"] == "Unable to marshal response: Object of type set is not JSON serializable"
        assert body["requestId"] == call.request_id


class TestImport:
    """The handler is imported when the invoker is entered; a bad handler is a configuration error."""

    @pytest.mark.parametrize(
        ("handler", "expected"),
        [
            ("tests.component.handlers.missing:handle", "ModuleNotFoundError"),
            ("tests.component.handlers.broken:handle", "cannot connect to the database"),
            (f"{MODULE}:no_such_function", "has no attribute 'no_such_function'"),
            (f"{MODULE}:NOT_CALLABLE", "is not callable"),
        ],
    )
    async def test_bad_handler_fails_on_enter(self, handler: str, expected: str) -> None:
        """A missing module, a module failing at import, a missing or non-callable attribute raise InvokeFatalError."""
        with pytest.raises(InvokeFatalError, match=re.escape(expected)) as caught:
            async with python_invoker(handler):
                pass
        assert handler in str(caught.value)

    async def test_module_is_importable_from_the_config_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A handler module next to the configuration file is found without any PYTHONPATH setting."""
        monkeypatch.setattr(sys, "path", list(sys.path))
        module = f"esm_handler_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{module}.py").write_text("def handle(event, context):\n    return {'from': 'config folder'}\n")
        async with python_invoker(f"{module}:handle", base_dir=tmp_path) as invoker:
            result = await invoker.invoke(invocation({}))
        assert json.loads(result.payload) == {"from": "config folder"}
        assert sys.path[0] == str(tmp_path)
        assert sys.path.count(str(tmp_path)) == 1
        monkeypatch.delitem(sys.modules, module)

    async def test_invoke_outside_the_context_is_a_programming_error(self) -> None:
        """Invoking before entering the invoker raises RuntimeError rather than running anything."""
        with pytest.raises(RuntimeError, match="async with"):
            await python_invoker("echo").invoke(invocation({}))


class TestBuildInvoker:
    """build_invoker picks the target class from the function's kind."""

    @pytest.mark.parametrize(
        ("spec", "kind"),
        [
            ({"handler": f"{MODULE}:echo"}, PythonInvoker),
            ({"lambda": "arn:aws:lambda:us-east-1:123456789012:function:billing:live"}, LambdaInvoker),
            ({"url": "http://127.0.0.1:1/invoke"}, HttpInvoker),
        ],
    )
    def test_kind_selects_the_invoker(self, spec: dict[str, str], kind: type) -> None:
        """A handler, lambda or url entry builds the matching invoker, named as configured."""
        invoker = build_invoker(
            "billing",
            FunctionConfig.model_validate(spec),
            base_dir=REPO,
            clients=ClientFactory(AwsConfig(region=REGION)),
            region=REGION,
            account=ACCOUNT,
            logger=structlog.get_logger(),
        )
        assert isinstance(invoker, kind)
        assert invoker.name == "billing"

    async def test_built_python_invoker_uses_region_and_account(self) -> None:
        """The invoked_function_arn a handler sees is made of the region and account given."""
        fn = FunctionConfig(handler=f"{MODULE}:describe")
        invoker = build_invoker(
            "orders",
            fn,
            base_dir=REPO,
            clients=ClientFactory(AwsConfig(region=REGION)),
            region=REGION,
            account=ACCOUNT,
            logger=structlog.get_logger(),
        )
        async with invoker:
            result = await invoker.invoke(invocation({}))
        arn = json.loads(result.payload)["invoked_function_arn"]
        assert arn == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders"
