"""The AWS clients' timestamp parser (`esm.aws.parse_timestamp_fast`): botocore's instants, without its cost."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.utils import parse_timestamp

from esm.aws import ClientFactory, parse_timestamp_fast
from esm.config import AwsConfig


@pytest.mark.parametrize("value", [1693997155.123, 1693997155, 0, 1.5, 1693997155.999999, 4102444800.25])
def test_epoch_numbers_give_botocores_instant_in_utc(value: float) -> None:
    fast = parse_timestamp_fast(value)
    assert fast == parse_timestamp(value)  # the same instant (botocore's is in the host's zone)
    assert fast.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "value", ["2024-01-02T03:04:05.678Z", "2024-01-02T03:04:05.000+0000", "Tue, 02 Jan 2024 03:04:05 GMT", "1.5"]
)
def test_text_goes_to_botocores_parser(value: str) -> None:
    assert parse_timestamp_fast(value) == parse_timestamp(value)


def test_a_bad_timestamp_fails_as_in_botocore() -> None:
    with pytest.raises(ValueError, match="Invalid timestamp"):
        parse_timestamp_fast("not a time")


def test_the_factorys_clients_use_it() -> None:
    factory = ClientFactory(AwsConfig(region="us-east-1"))
    parsers = factory._session.get_component("response_parser_factory")
    assert parsers.create_parser("json")._timestamp_parser is parse_timestamp_fast
