"""microshop's local launcher: every service as its own process, and the platform fixture for tests."""

from microshop_launcher.platform import Platform, PlatformConfig, PlatformError, running
from microshop_launcher.processes import free_port

__all__ = ["Platform", "PlatformConfig", "PlatformError", "free_port", "running"]
