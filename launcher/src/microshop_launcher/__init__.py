"""microshop's local launcher: every service as its own process, and the platform fixture for tests."""

from microshop_kit.ports import free_port
from microshop_launcher.platform import Platform, PlatformConfig, PlatformError, running

__all__ = ["Platform", "PlatformConfig", "PlatformError", "free_port", "running"]
