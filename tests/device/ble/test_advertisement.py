"""Advertisement content and its 31-byte budget (the mock checks the same; see test_bluez)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from dbus_fast import Variant

from device_firmware.ble.advertisement import (
    IFACE_ADVERTISEMENT,
    LEGACY_ADV_SIZE,
    Advertisement,
    AdvertisementData,
    uuid_size,
)
from device_firmware.ble.bluez import _improv_data
from device_firmware.ble.errors import BleError
from device_firmware.ble.improv import IMPROV_SERVICE_DATA_UUID, IMPROV_SERVICE_UUID, ImprovState
from device_firmware.ble.wire import SERVICE_DATA_SIZE, SERVICE_UUID


def ours(state: int = 0x08) -> AdvertisementData:
    return AdvertisementData(
        service_data={SERVICE_UUID: bytes([1, state, 0, 0, 0, 0, 0])},
        local_name="IoT Onboard 01234567",
    )


def test_uuid_sizes() -> None:
    assert uuid_size(IMPROV_SERVICE_DATA_UUID) == 2
    assert uuid_size("12345678-0000-1000-8000-00805f9b34fb") == 4
    assert uuid_size(SERVICE_UUID) == 16
    with pytest.raises(BleError):
        uuid_size("FFEA8E11-9877-4AE7-8FBB-4D229F30FE00")


def test_both_advertisements_fit_legacy_advertising() -> None:
    assert ours().advertising_length() == 3 + 2 + 16 + SERVICE_DATA_SIZE == 28
    assert ours().scan_response_length() == 2 + 20
    improv = _improv_data(ImprovState.AUTHORIZED)
    assert improv.advertising_length() == 3 + 2 + 16 + 2 + 2 + 6 == LEGACY_ADV_SIZE
    ours().check()
    improv.check()


def test_a_uuid_list_next_to_our_service_data_would_not_fit() -> None:
    both = AdvertisementData(
        service_uuids=(SERVICE_UUID,), service_data={SERVICE_UUID: bytes(SERVICE_DATA_SIZE)}
    )
    assert both.advertising_length() == 46
    with pytest.raises(BleError, match="exceeds 31"):
        both.check()
    with pytest.raises(BleError, match="scan response"):
        AdvertisementData(local_name="x" * 30).check()


def test_changes_reach_bluez_only_while_registered_and_only_what_changed() -> None:
    emitted: list[tuple[str, str, Mapping[str, Variant]]] = []
    advert = Advertisement(
        "/adv", ours(), emit=lambda path, iface, props: emitted.append((path, iface, props))
    )
    advert.update(ours(0x09))
    assert emitted == []
    advert.registered = True
    advert.update(ours(0x09))  # same data
    assert emitted == []
    advert.update(ours(0x0A))
    assert len(emitted) == 1
    path, iface, props = emitted[0]
    assert (path, iface, set(props)) == ("/adv", IFACE_ADVERTISEMENT, {"ServiceData"})
    assert advert.properties()[IFACE_ADVERTISEMENT]["ServiceUUIDs"].value == []


def test_improv_advertisement_properties() -> None:
    props = _improv_data(ImprovState.AUTHORIZATION_REQUIRED).properties()
    assert props["ServiceUUIDs"].value == [IMPROV_SERVICE_UUID]
    assert props["Type"].value == "peripheral"
    assert "LocalName" not in props
