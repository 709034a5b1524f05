"""The provisioning window's bookkeeping: the one place that opens and closes it.

Whether a trigger opens the window, and why, is :func:`~device_firmware.decide.window_for`;
when the claim closes it is :attr:`~device_firmware.decide.Decision.close_window`. This class
applies both to the session host (whose limiter keeps the 15 minutes and the failure budget)
and remembers whether the device was claimed at the last decision.
"""

from __future__ import annotations

from .decide import Decision, Trigger, WindowReason, window_for
from .provisioning.session_host import SessionHost
from .state import DeviceStateRecord


class ProvisioningWindow:
    """Opens the session host's window on a trigger, closes it with the claim and at stop."""

    def __init__(self, host: SessionHost, *, claimed: bool) -> None:
        """``claimed``: whether the device is claimed at boot (its window stays closed)."""
        self._host = host
        self._was_claimed = claimed

    @property
    def reason(self) -> WindowReason | None:
        """Why the window is open; None while closed (also once it lapsed)."""
        return self._host.window_reason

    @property
    def was_claimed(self) -> bool:
        """Whether the device was claimed at the last decision applied."""
        return self._was_claimed

    def open_for(
        self, trigger: Trigger, record: DeviceStateRecord, *, end_session: bool = False
    ) -> WindowReason | None:
        """Open a fresh window if ``trigger`` opens one for ``record``; return why.

        ``end_session``: end the session that is open first (a released device's old owner).
        """
        reason = window_for(trigger, record)
        if reason is None:
            return None
        if end_session:
            self._host.close_window(end_session=True)
        self._host.open_window(reason)
        return reason

    def follow(self, decision: Decision, record: DeviceStateRecord) -> None:
        """Close the label's window when the claim just arrived; remember the claim.

        Later owner-only windows (watchdog, button) stay open until they lapse, across the
        Wi-Fi change they are for.
        """
        if decision.close_window:
            self._host.close_window()
        self._was_claimed = record.claimed

    def close(self) -> None:
        """The agent stops: close the window and end any session."""
        self._host.close_window(end_session=True)
