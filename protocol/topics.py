"""Topic names: ``doorbell/{device}/{what}``; commands under ``doorbell/{device}/cmd/``."""

from __future__ import annotations

import re

ROOT = "doorbell"
SHARE_GROUP = "relay"
LOG_HEAD = "relay/log/head"
DEVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
"""A device id: 2-63 lower-case letters, digits or dashes, starting with a letter or digit."""
_DEVICE = re.compile(DEVICE_ID_PATTERN)
DEVICE_TO_RELAY = ("status", "event", "clip", "deleted", "released", "refused", "snapshot")
"""What a doorbell publishes under ``doorbell/{its id}/``; the relay reads all of them."""
RELAY_TO_DEVICE = ("cmd/#",)
"""What the relay sends a doorbell under ``doorbell/{id}/``; each doorbell reads only its own."""
RELAY_ACCOUNT = "relay"
"""The relay's broker account; no doorbell may take this id."""
RESERVED_IDS = frozenset({RELAY_ACCOUNT})
PUBLIC_TOPICS = (LOG_HEAD,)
"""Retained topics every account may read."""


class TopicError(ValueError):
    pass


def is_device_id(device: str) -> bool:
    """A well-formed device id that no doorbell is barred from (``relay`` is the relay's)."""
    return bool(_DEVICE.match(device)) and device not in RESERVED_IDS


def topic_for(device: str, what: str) -> str:
    if not _DEVICE.match(device):
        raise TopicError(f"not a device id: {device!r}")
    return f"{ROOT}/{device}/{what}"


def parse_topic(topic: str) -> tuple[str, str]:
    """``doorbell/front-door/cmd/release`` → ``("front-door", "cmd/release")``."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != ROOT:
        raise TopicError(f"not a doorbell topic: {topic!r}")
    if not _DEVICE.match(parts[1]):
        raise TopicError(f"not a device id in topic: {parts[1]!r}")
    return parts[1], "/".join(parts[2:])


def commands_filter(device: str) -> str:
    return topic_for(device, "cmd/#")


def relay_filters(group: str = SHARE_GROUP) -> list[str]:
    """Shared subscriptions through which relay workers split the devices' traffic."""
    return [f"$share/{group}/{ROOT}/+/{what}" for what in DEVICE_TO_RELAY]
