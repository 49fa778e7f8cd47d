"""EventBridge behind the EventPublisher interface (docflow.ports); the client is created on first use."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from docflow.adapters.boto import BOTO_CONFIG, translate
from docflow.errors import TransientError
from docflow.ports import EventPublisher


class EventBridgePublisher(EventPublisher):
    def __init__(self, bus_name: str = "default") -> None:
        self.bus_name = bus_name

    @cached_property
    def _events(self) -> Any:
        return boto3.client("events", config=BOTO_CONFIG)

    def publish(self, source: str, detail_type: str, detail: dict[str, Any]) -> None:
        entry = {
            "Source": source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail),
            "EventBusName": self.bus_name,
        }
        try:
            resp = self._events.put_events(Entries=[entry])
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"put event on bus {self.bus_name}") from exc
        if resp.get("FailedEntryCount"):
            failed = resp["Entries"][0]
            raise TransientError(
                f"EventBridge refused the event: {failed.get('ErrorCode')}: {failed.get('ErrorMessage')}"
            )
