"""Retraining when enough new labels have arrived.

Each label a user sends back (a new one, or a changed one) adds 1 to an atomic counter in the record
store; every ``threshold`` labels, an event goes to EventBridge, where a rule starts the training state
machine (infra_cdk/constructs/training.py). Counting in multiples needs no reset: a training run never
has to give labels back, and a lost event only delays retraining until the next multiple or the
schedule. Off (threshold 0) on the local backend, which has no training state machine to start.
"""

from __future__ import annotations

import logging

from docflow.ports import EventPublisher, RecordStore
from docflow.settings import Settings

logger = logging.getLogger(__name__)

NEW_LABELS_COUNTER = "new-labels"
EVENT_SOURCE = "docflow.feedback"
EVENT_DETAIL_TYPE = "Labels threshold reached"


def count_new_label(records: RecordStore, events: EventPublisher, threshold: int) -> bool:
    """Count one new label; announce every ``threshold``-th. True when this label sent the event."""
    if threshold <= 0:
        return False
    count = records.increment_counter(NEW_LABELS_COUNTER)
    if count % threshold:
        return False
    events.publish(EVENT_SOURCE, EVENT_DETAIL_TYPE, {"labels_counted": count, "threshold": threshold})
    logger.info("%d labels counted: retraining requested", count)
    return True


def label_added(settings: Settings, records: RecordStore) -> None:
    """The API's hook after it stored a new label. Best effort: the label is saved either way, and the
    scheduled run trains on it if the count or the event is lost."""
    if settings.backend != "aws" or settings.retrain_label_threshold <= 0:
        return
    # Imported here: only the aws backend sends events; the local runtime never loads boto3.
    from docflow.adapters.events import EventBridgePublisher

    try:
        count_new_label(records, EventBridgePublisher(settings.event_bus_name), settings.retrain_label_threshold)
    except Exception as exc:
        logger.warning("counting the new label for retraining failed: %s", exc)
