"""Network control: the backend interface, NetworkManager over D-Bus, and a simulation."""

from .backend import AccessPoint, NetworkBackend, NetworkError, WifiCredentials

__all__ = ["AccessPoint", "NetworkBackend", "NetworkError", "WifiCredentials"]
