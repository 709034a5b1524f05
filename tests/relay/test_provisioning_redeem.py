"""Redeeming the add-on's one-time provisioning token (``POST /v1/provisioning/redeem``).

What Home Assistant's ``async_step_hassio`` calls: the token the add-on announced through the
Supervisor makes the household's owner account, signed in, with a household. It works once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import RelayConfig, load_config, write_secret_key
from cloud_relay.errors import ConfigError
from cloud_relay.provisioning import mint_token, tokens_path

from .conftest import AppFactory
from .helpers import Api

REDEEM = "/v1/provisioning/redeem"


@pytest.fixture
async def provisioned_api(
    start_api: AppFactory,
    relay_config: RelayConfig,
    broker_adapter: MosquittoDynsecAdapter,
    tmp_path: Path,
) -> tuple[Api, Path]:
    """The relay with a tokens file beside a configuration, as ``serve --config`` has."""
    tokens = tokens_path(tmp_path / "relay.toml")
    api: Api = await start_api(
        relay_config.with_changes(provisioning_tokens=tokens), broker_adapter
    )
    return api, tokens


async def test_a_token_makes_a_signed_in_owner_with_a_household_once(
    provisioned_api: tuple[Api, Path],
) -> None:
    api, tokens = provisioned_api
    token = mint_token(tokens, now=time.time())
    reply = await api.request(
        "POST", REDEEM, json_body={"token": token, "household_name": "Our home"}, expect=201
    )
    household = reply.body["household"]
    assert (household["name"], household["role"]) == ("Our home", "owner")
    access = reply.body["tokens"]["access_token"]
    listed = await api.request("GET", "/v1/households", token=access, expect=200)
    assert [h["household_id"] for h in listed.body["households"]] == [household["household_id"]]
    # The session refreshes like any other.
    refresh = reply.body["tokens"]["refresh_token"]
    await api.request("POST", "/v1/auth/refresh", json_body={"refresh_token": refresh}, expect=200)

    again = await api.request(
        "POST", REDEEM, json_body={"token": token, "household_name": "Theirs"}, expect=401
    )
    assert again.body["error"]["code"] == "provisioning_token_invalid"
    assert "restart the IoT Onboard add-on" in again.body["error"]["message"]


async def test_two_redeems_of_one_token_at_once_make_one_owner(
    provisioned_api: tuple[Api, Path],
) -> None:
    api, tokens = provisioned_api
    token = mint_token(tokens, now=time.time())
    body = {"token": token, "household_name": "Home"}
    replies = await asyncio.gather(*(api.request("POST", REDEEM, json_body=body) for _ in range(4)))
    assert sorted(reply.status for reply in replies) == [201, 401, 401, 401]


async def test_unknown_expired_and_absent_tokens_are_refused(
    provisioned_api: tuple[Api, Path],
    start_api: AppFactory,
    relay_config: RelayConfig,
    broker_adapter: MosquittoDynsecAdapter,
) -> None:
    api, tokens = provisioned_api
    expired = mint_token(tokens, ttl=1, now=time.time() - 10)
    for token in ("x" * 43, expired):
        reply = await api.request(
            "POST", REDEEM, json_body={"token": token, "household_name": "Home"}, expect=401
        )
        assert reply.body["error"]["code"] == "provisioning_token_invalid"
    # A service started without a configuration file has no tokens at all.
    bare: Api = await start_api(relay_config, broker_adapter)
    reply = await bare.request(
        "POST", REDEEM, json_body={"token": "x" * 43, "household_name": "Home"}, expect=401
    )
    assert reply.body["error"]["code"] == "provisioning_token_invalid"
    # A malformed body is a 400 that names the field.
    reply = await api.request("POST", REDEEM, json_body={"token": "x"}, expect=400)
    assert "household_name" in reply.body["error"]["message"]


def test_the_configuration_file_names_the_tokens_beside_it(tmp_path: Path) -> None:
    write_secret_key(tmp_path / "secret.key")
    config_file = tmp_path / "relay.toml"
    config_file.write_text('secret_key_file = "secret.key"\n[broker]\npassword = "p"\n')
    assert load_config(config_file).provisioning_tokens == tokens_path(config_file)
    # Not a setting: a file that names its own tokens file is refused.
    config_file.write_text('provisioning_tokens = "/x"\n' + config_file.read_text())
    with pytest.raises(ConfigError, match="provisioning_tokens"):
        load_config(config_file)
