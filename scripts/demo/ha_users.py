"""Create Home Assistant users before its first start: ``python ha_users.py CONFIG_DIR``.

Reads ``[{"username", "password", "name", "admin"}, ...]`` (JSON) on standard input, so no
password appears in a process list. Users that exist already are left alone.

Why not ``hass --script auth add``: that only stores a username and password for the login
form. The user behind them is created at the first login, as an administrator and not as the
owner, and until then no other part of Home Assistant can see it (an integration mapping Home
Assistant users to household roles would find nobody). This does what Home Assistant's own
onboarding does for its first user: create the user in its group (the first one becomes the
owner), add the login and link the two.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from homeassistant import runner
from homeassistant.auth import auth_manager_from_config
from homeassistant.auth.const import GROUP_ID_ADMIN, GROUP_ID_USER
from homeassistant.auth.providers.homeassistant import HassAuthProvider
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er


async def create_users(config_dir: Path, users: list[dict[str, Any]]) -> list[str]:
    """Create the missing users; return the usernames created."""
    hass = HomeAssistant(str(config_dir))
    # The auth manager's store touches both registries when it loads.
    await asyncio.gather(dr.async_load(hass), er.async_load(hass))
    hass.auth = await auth_manager_from_config(hass, [{"type": "homeassistant"}], [])
    provider = hass.auth.auth_providers[0]
    if not isinstance(provider, HassAuthProvider):  # pragma: no cover - configured just above
        raise TypeError("expected Home Assistant's own auth provider")
    await provider.async_initialize()
    if provider.data is None:  # pragma: no cover - async_initialize loads it
        raise RuntimeError("the auth provider's data did not load")
    existing = {entry["username"] for entry in provider.data.users}
    created: list[str] = []
    for spec in users:
        if spec["username"] in existing:
            continue
        user = await hass.auth.async_create_user(
            spec["name"], group_ids=[GROUP_ID_ADMIN if spec["admin"] else GROUP_ID_USER]
        )
        await provider.async_add_auth(spec["username"], spec["password"])
        credentials = await provider.async_get_or_create_credentials({"username": spec["username"]})
        await hass.auth.async_link_user(user, credentials)
        created.append(spec["username"])
    await provider.data.async_save()
    # The auth store saves with a delay; stopping writes it. This Home Assistant never ran
    # (nothing but storage is set up), so the stop has to be forced past its state check.
    await hass.async_stop(force=True)
    return created


def main() -> int:
    """Read the users from stdin and create them in the config directory given."""
    config_dir = Path(sys.argv[1])
    users = json.loads(sys.stdin.read())
    asyncio.set_event_loop_policy(runner.HassEventLoopPolicy(debug=False))
    created = asyncio.run(create_users(config_dir, users))
    sys.stdout.write(f"created Home Assistant users: {', '.join(created) or '(none)'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
