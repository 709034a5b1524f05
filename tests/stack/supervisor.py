"""A stand-in for the Home Assistant Supervisor: what HA's ``hassio`` integration and our add-on
ask of it, answered as the real one answers, on a loopback port.

Home Assistant runs with ``SUPERVISOR=127.0.0.1:PORT`` and ``SUPERVISOR_TOKEN``: its real
``hassio`` integration (HA 2025.4.4: ``homeassistant/components/hassio/__init__.py``,
``handler.py``, ``discovery.py``, ``coordinator.py`` and aiohasupervisor 0.3.0's models) sets
up against this server, so the answers carry every field those models require, with values a
Home Assistant OS 15 machine reports. The add-on is the one in this repository, installed from
its git URL: its slug, host name, ports, options and translations come from
``repository.yaml`` and the add-on's ``config.yaml`` the way the Supervisor derives them.

What the real Supervisor does for discovery (``supervisor/api/discovery.py``,
``supervisor/discovery``): only the add-on may ``POST /discovery``, only for a service its
config lists; the message is kept (``GET /discovery``, ``GET /discovery/<uuid>`` for Home
Assistant) and pushed to Home Assistant at ``POST /api/hassio_push/discovery/<uuid>`` with an
access token from the refresh token Home Assistant gave it in ``POST /homeassistant/options``.

Everything not listed here is answered 404 as the Supervisor does and recorded in
:attr:`StandInSupervisor.unknown`, so a test sees what Home Assistant asked that nobody
answered. The server runs its own event loop in a thread: the browser test is synchronous.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Final

import aiohttp
import yaml
from aiohttp import web

from .helpers import REPO

ADDON_DIR: Final = REPO / "addon" / "iot_onboard_relay"
SUPERVISOR_VERSION: Final = "2025.04.1"
OS_VERSION: Final = "15.2"
MACHINE: Final = "qemux86-64"
#: A board no hardware integration claims (HA sets one up for "rpi4-64", "yellow", ...).
BOARD: Final = "ova"
#: The add-ons' internal network: the Supervisor is .2, Home Assistant .1.
SUPERVISOR_IP: Final = "172.30.32.2"
ADDON_IP: Final = "172.30.33.1"
STOP_TIMEOUT: Final = 10.0


def _ok(data: Any = None) -> web.Response:
    return web.json_response({"result": "ok", "data": {} if data is None else data})


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"result": "error", "message": message}, status=status)


def _stats() -> dict[str, Any]:
    """A container's ``/stats`` (aiohasupervisor's ``ContainerStats``)."""
    return {
        "cpu_percent": 0.4,
        "memory_usage": 48_000_000,
        "memory_limit": 4_000_000_000,
        "memory_percent": 1.2,
        "network_rx": 120_000,
        "network_tx": 80_000,
        "blk_read": 0,
        "blk_write": 0,
    }


def _ui_option(name: str, kind: str) -> dict[str, Any]:
    """An option of config.yaml's ``schema`` as the Supervisor shows it to the frontend."""
    option: dict[str, Any] = {"name": name, "required": not kind.endswith("?")}
    if kind.startswith("list("):
        return {**option, "type": "select", "options": kind[5:].rstrip("?)").split("|")}
    return {**option, "type": "string"}


@dataclass(frozen=True, slots=True)
class Addon:
    """The add-on as the Supervisor knows it, read from this repository."""

    config: dict[str, Any]
    repository: str
    repository_url: str
    translations: dict[str, Any]
    changelog: str

    @classmethod
    def from_repository(cls) -> Addon:
        """A git repository's add-ons get the repository's hash as their slug's prefix."""
        repository = yaml.safe_load((REPO / "repository.yaml").read_text(encoding="utf-8"))
        url = repository["url"]
        return cls(
            config=yaml.safe_load((ADDON_DIR / "config.yaml").read_text(encoding="utf-8")),
            # supervisor/store/utils.py get_hash_from_repository: sha1 of the lower-cased URL.
            repository=hashlib.sha1(url.lower().encode(), usedforsecurity=False).hexdigest()[:8],
            repository_url=url,
            translations={
                "en": yaml.safe_load(
                    (ADDON_DIR / "translations" / "en.yaml").read_text(encoding="utf-8")
                )
            },
            changelog=(ADDON_DIR / "CHANGELOG.md").read_text(encoding="utf-8"),
        )

    @property
    def slug(self) -> str:
        return f"{self.repository}_{self.config['slug']}"

    @property
    def hostname(self) -> str:
        """Its DNS name on the add-ons' network (``supervisor/addons/addon.py``)."""
        return self.slug.replace("_", "-")

    def base(self) -> dict[str, Any]:
        """aiohasupervisor's ``AddonInfoBaseFields``."""
        current = self.config["version"]
        return {
            "advanced": False,
            "available": True,
            "build": False,
            "description": self.config["description"],
            "homeassistant": None,
            "icon": False,
            "logo": False,
            "name": self.config["name"],
            "repository": self.repository,
            "slug": self.slug,
            "stage": "stable",
            "update_available": False,
            "url": self.config["url"],
            "version_latest": current,
            "version": current,
        }

    def in_store(self) -> dict[str, Any]:
        """``GET /store``'s entry (``StoreAddon``)."""
        return {
            **self.base(),
            "arch": self.config["arch"],
            "documentation": True,
            "installed": True,
        }

    def installed(self) -> dict[str, Any]:
        """``GET /addons``'s entry (``InstalledAddon``)."""
        return {**self.base(), "detached": False, "state": "started"}

    def info(self, network: dict[str, int | None]) -> dict[str, Any]:
        """``GET /addons/<slug>/info`` (``InstalledAddonComplete``)."""
        config = self.config
        return {
            **self.base(),
            "detached": False,
            "arch": config["arch"],
            "documentation": True,
            "apparmor": "default",
            "auth_api": False,
            "docker_api": False,
            "full_access": False,
            "homeassistant_api": False,
            "host_network": False,
            "host_pid": False,
            "ingress": False,
            "long_description": None,
            "rating": 6,
            "signed": False,
            "hassio_api": config.get("hassio_api", False),
            "hassio_role": "default",
            "state": "started",
            "hostname": self.hostname,
            "dns": [f"{self.hostname}.local.hass.io"],
            "protected": True,
            "boot": config["boot"],
            "boot_config": config["boot"],
            "options": config["options"],
            "schema": [_ui_option(name, kind) for name, kind in config["schema"].items()],
            "machine": [],
            "network": network,
            "network_description": config["ports_description"],
            "host_ipc": False,
            "host_uts": False,
            "host_dbus": False,
            "privileged": [],
            "changelog": True,
            "stdin": False,
            "gpio": False,
            "usb": False,
            "uart": False,
            "kernel_modules": False,
            "devicetree": False,
            "udev": False,
            "video": False,
            "audio": False,
            "startup": config["startup"],
            "services": [],
            "discovery": config["discovery"],
            "translations": self.translations,
            "webui": None,
            "ingress_entry": None,
            "ingress_url": None,
            "ingress_port": None,
            "ingress_panel": None,
            "audio_input": None,
            "audio_output": None,
            "auto_update": False,
            "ip_address": ADDON_IP,
            "watchdog": True,
            "devices": [],
            "system_managed": False,
            "system_managed_config_entry": None,
        }


@dataclass
class StandInSupervisor:
    """The server; :meth:`start` it, point HA and the add-on at :attr:`address`, :meth:`stop`.

    ``ports``: the host ports the user mapped for the add-on's container ports (the add-on's
    ``config.yaml`` ``ports``), as its Network settings would hold them.
    """

    ports: dict[str, int | None]
    addon: Addon = field(default_factory=Addon.from_repository)
    #: Home Assistant's token (its SUPERVISOR_TOKEN) and the add-on's own.
    core_token: str = field(default_factory=lambda: secrets.token_hex(32))
    addon_token: str = field(default_factory=lambda: secrets.token_hex(32))
    address: str = ""
    #: uuid → the discovery message, as ``GET /discovery/<uuid>`` returns it.
    discoveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (uuid, HTTP status) of every push to Home Assistant.
    pushes: list[tuple[str, int]] = field(default_factory=list)
    #: Requests nobody here answers, and requests with a wrong or missing token.
    unknown: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    #: What Home Assistant set with POST /homeassistant/options (its port, its refresh token).
    core_options: dict[str, Any] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free loopback port (the kernel's: no race); ``host:port``."""
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(STOP_TIMEOUT)
        return self.address

    async def _serve(self) -> str:
        app = web.Application(middlewares=[self._authorise])
        routes = web.RouteTableDef()
        routes.get("/supervisor/ping")(self._empty)
        routes.post("/supervisor/options")(self._empty)
        routes.post("/homeassistant/options")(self._core_options)
        routes.get("/info")(self._info)
        routes.get("/host/info")(self._host_info)
        routes.get("/os/info")(self._os_info)
        routes.get("/core/info")(self._core_info)
        routes.get("/supervisor/info")(self._supervisor_info)
        routes.get("/network/info")(self._network_info)
        routes.get("/core/stats")(self._stats)
        routes.get("/supervisor/stats")(self._stats)
        routes.get("/resolution/info")(self._resolution_info)
        routes.get("/ingress/panels")(self._ingress_panels)
        routes.get("/mounts")(self._mounts)
        routes.get("/store")(self._store)
        routes.get("/store/addons/{slug}/changelog")(self._changelog)
        routes.get("/addons")(self._addons)
        routes.get("/addons/{slug}/info")(self._addon_info)
        routes.get("/addons/{slug}/stats")(self._addon_stats)
        routes.get("/discovery")(self._discovery_list)
        routes.post("/discovery")(self._discovery_new)
        routes.get("/discovery/{uuid}")(self._discovery_get)
        app.add_routes(routes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        """Close the server and its pushes; the thread ends with its loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            for task in list(self._tasks):
                task.cancel()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), loop).result(STOP_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        loop.close()
        self._loop = self._thread = None

    def wait_for_push(self, timeout: float) -> tuple[str, int]:
        """The first push to Home Assistant (uuid, status), once it is answered."""
        deadline = time.monotonic() + timeout
        while not self.pushes:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no discovery pushed to Home Assistant within {timeout} s; messages kept: "
                    f"{self.discoveries}; Home Assistant's options: {sorted(self.core_options)}"
                )
            time.sleep(0.1)
        return self.pushes[0]

    # --- who may ask what -------------------------------------------------------------------

    def _caller(self, request: web.Request) -> str | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if secrets.compare_digest(token, self.core_token):
            return "core"
        if secrets.compare_digest(token, self.addon_token):
            return "addon"
        return None

    @web.middleware
    async def _authorise(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Home Assistant may ask anything here; the add-on its own info and discovery."""
        caller = self._caller(request)
        addon_may = request.path in {"/addons/self/info", "/discovery"} and (
            request.method == "POST" or request.path != "/discovery"
        )
        if caller is None or (caller == "addon" and not addon_may):
            self.refused.append(f"{caller} {request.method} {request.path}")
            return _error("Unauthorized access", 401)
        request["caller"] = caller
        try:
            response: web.StreamResponse = await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            self.unknown.append(f"{request.method} {request.path}")
            return _error(f"{request.method} {request.path} is not a Supervisor API here", 404)
        return response

    # --- Home Assistant's start-up ----------------------------------------------------------

    async def _empty(self, _request: web.Request) -> web.Response:
        return _ok()

    async def _core_options(self, request: web.Request) -> web.Response:
        self.core_options.update(await request.json())
        return _ok()

    async def _info(self, _request: web.Request) -> web.Response:
        return _ok(
            {
                "supervisor": SUPERVISOR_VERSION,
                "homeassistant": version("homeassistant"),
                "hassos": OS_VERSION,
                "docker": "28.0.4",
                "hostname": "homeassistant",
                "operating_system": f"Home Assistant OS {OS_VERSION}",
                "features": ["reboot", "shutdown", "services", "network", "hostname", "haos"],
                "machine": MACHINE,
                "arch": "amd64",
                "state": "running",
                "supported_arch": ["amd64", "i386"],
                "supported": True,
                "channel": "stable",
                "logging": "info",
                "timezone": "UTC",
            }
        )

    async def _host_info(self, _request: web.Request) -> web.Response:
        return _ok(
            {
                "agent_version": "1.7.2",
                "apparmor_version": "3.1.2",
                "chassis": "vm",
                "virtualization": "kvm",
                "cpe": f"cpe:2.3:o:home-assistant:haos:{OS_VERSION}:*:production:*:*:*:ova:*",
                "deployment": "production",
                "disk_free": 25.1,
                "disk_total": 30.8,
                "disk_used": 4.5,
                "disk_life_time": None,
                "features": ["reboot", "shutdown", "services", "network", "hostname", "haos"],
                "hostname": "homeassistant",
                "llmnr_hostname": "homeassistant",
                "kernel": "6.12.23-haos",
                "operating_system": f"Home Assistant OS {OS_VERSION}",
                "timezone": "UTC",
                "dt_utc": "2026-12-06T00:00:00+00:00",
                "dt_synchronized": True,
                "use_ntp": True,
                "startup_time": 1.9,
                "boot_timestamp": 1_765_000_000_000_000,
                "broadcast_llmnr": True,
                "broadcast_mdns": True,
            }
        )

    async def _os_info(self, _request: web.Request) -> web.Response:
        return _ok(
            {
                "version": OS_VERSION,
                "version_latest": OS_VERSION,
                "update_available": False,
                "board": BOARD,
                "boot": "A",
                "data_disk": "/dev/sda8",
                "boot_slots": {
                    "A": {"state": "booted", "status": "good", "version": OS_VERSION},
                    "B": {"state": "inactive", "status": "good", "version": "15.1"},
                },
            }
        )

    async def _core_info(self, _request: web.Request) -> web.Response:
        current = version("homeassistant")
        return _ok(
            {
                "version": current,
                "version_latest": current,
                "update_available": False,
                "machine": MACHINE,
                "ip_address": "172.30.32.1",
                "arch": "amd64",
                "image": f"ghcr.io/home-assistant/{MACHINE}-homeassistant",
                "boot": True,
                "port": self.core_options.get("port", 8123),
                "ssl": False,
                "watchdog": True,
                "audio_input": None,
                "audio_output": None,
                "backups_exclude_database": False,
            }
        )

    async def _supervisor_info(self, _request: web.Request) -> web.Response:
        addon = self.addon.base()
        return _ok(
            {
                "version": SUPERVISOR_VERSION,
                "version_latest": SUPERVISOR_VERSION,
                "update_available": False,
                "channel": "stable",
                "arch": "amd64",
                "supported": True,
                "healthy": True,
                "ip_address": SUPERVISOR_IP,
                "timezone": "UTC",
                "logging": "info",
                "debug": False,
                "debug_block": False,
                "diagnostics": False,
                "auto_update": True,
                "country": None,
                "detect_blocking_io": False,
                "addons": [
                    {
                        key: addon[key]
                        for key in (
                            "name",
                            "slug",
                            "version",
                            "version_latest",
                            "update_available",
                            "repository",
                            "icon",
                        )
                    }
                    | {"state": "started"}
                ],
                "addons_repositories": [self.addon.repository_url],
            }
        )

    async def _network_info(self, _request: web.Request) -> web.Response:
        return _ok(
            {
                "interfaces": [],
                "docker": {
                    "interface": "hassio",
                    "address": "172.30.32.0/23",
                    "gateway": "172.30.32.1",
                    "dns": "172.30.32.3",
                },
                "host_internet": True,
                "supervisor_internet": True,
            }
        )

    async def _stats(self, _request: web.Request) -> web.Response:
        return _ok(_stats())

    async def _resolution_info(self, _request: web.Request) -> web.Response:
        return _ok(
            {
                "unsupported": [],
                "unhealthy": [],
                "suggestions": [],
                "issues": [],
                "checks": [{"enabled": True, "slug": "free_space"}],
            }
        )

    async def _ingress_panels(self, _request: web.Request) -> web.Response:
        return _ok({"panels": {}})

    async def _mounts(self, _request: web.Request) -> web.Response:
        """No network storage: backups stay on the machine (HA's backup agents ask)."""
        return _ok({"default_backup_mount": None, "mounts": []})

    async def _store(self, _request: web.Request) -> web.Response:
        repository = self.addon.repository
        return _ok(
            {
                "addons": [self.addon.in_store()],
                "repositories": [
                    {
                        "slug": repository,
                        "name": "IoT Onboard add-ons",
                        "source": self.addon.repository_url,
                        "url": self.addon.repository_url,
                        "maintainer": "IoT Onboard developers",
                    }
                ],
            }
        )

    def _known_addon(self, request: web.Request) -> str:
        slug = request.match_info["slug"]
        if slug == "self" and request["caller"] == "addon":
            return self.addon.slug
        if slug != self.addon.slug:
            raise web.HTTPNotFound
        return slug

    async def _changelog(self, request: web.Request) -> web.Response:
        self._known_addon(request)
        return web.Response(text=self.addon.changelog)

    async def _addons(self, _request: web.Request) -> web.Response:
        return _ok({"addons": [self.addon.installed()]})

    async def _addon_info(self, request: web.Request) -> web.Response:
        self._known_addon(request)
        return _ok(self.addon.info(self.ports))

    async def _addon_stats(self, request: web.Request) -> web.Response:
        self._known_addon(request)
        return _ok(_stats())

    # --- discovery --------------------------------------------------------------------------

    async def _discovery_list(self, _request: web.Request) -> web.Response:
        services: dict[str, list[str]] = {}
        for message in self.discoveries.values():
            services.setdefault(message["service"], []).append(message["addon"])
        return _ok({"discovery": list(self.discoveries.values()), "services": services})

    async def _discovery_get(self, request: web.Request) -> web.Response:
        message = self.discoveries.get(request.match_info["uuid"])
        if message is None:
            return _error("Discovery message not found", 400)
        return _ok(message)

    async def _discovery_new(self, request: web.Request) -> web.Response:
        """The add-on's announcement: kept (a repeat replaces it), then pushed to HA."""
        body = await request.json()
        service = body.get("service")
        if service not in self.addon.config["discovery"]:
            message = "Add-ons must list services they provide via discovery in their config!"
            return _error(message, 403)
        slug = self.addon.slug
        previous = next((u for u, m in self.discoveries.items() if m["addon"] == slug), None)
        message_uuid = previous or uuid.uuid4().hex
        self.discoveries[message_uuid] = {
            "addon": slug,
            "service": service,
            "uuid": message_uuid,
            "config": body.get("config") or {},
        }
        task = asyncio.create_task(self._push(message_uuid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _ok({"uuid": message_uuid})

    async def _push(self, message_uuid: str) -> None:
        """As the Supervisor's Home Assistant API client: an access token, then the push."""
        port, refresh_token = self.core_options.get("port"), self.core_options.get("refresh_token")
        if port is None or refresh_token is None:
            return  # Home Assistant reads the message itself at its start (GET /discovery)
        base = f"http://127.0.0.1:{port}"
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{base}/auth/token", data=form) as reply:
                    if reply.status != 200:
                        self.pushes.append((message_uuid, reply.status))  # the token's failure
                        return
                    access_token = (await reply.json())["access_token"]
                async with session.post(
                    f"{base}/api/hassio_push/discovery/{message_uuid}",
                    json=self.discoveries[message_uuid],
                    headers={"Authorization": f"Bearer {access_token}"},
                ) as reply:
                    self.pushes.append((message_uuid, reply.status))
        except aiohttp.ClientError:
            self.pushes.append((message_uuid, 0))  # Home Assistant did not answer
