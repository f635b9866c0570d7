"""A tiny connector and object type whose final content depends on task order."""

from __future__ import annotations

from typing import Any

from syncbus import (
    BaseIntegrationConnector,
    IntegrationBus,
    InternalObject,
    ObjectType,
    Ordering,
    TaskDataType,
    TaskType,
)

SEQ_TYPE = ObjectType(
    "seq.counter",
    "seq_counter",
    "counter_id",
    code_name_column="counter_name",
    columns={"counter_name": str, "n": int},
)


class SeqConnector(BaseIntegrationConnector):
    """Each task sets counter ``key`` to ``n``: the last task per key must win."""

    connector_name = "Seq"

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject:
        return InternalObject("seq.counter", {"counter_name": obj["key"], "n": obj["n"]})


def make_bus(url: str, **kwargs: Any) -> IntegrationBus:
    bus = IntegrationBus(url, **kwargs)
    bus.register_object_type(SEQ_TYPE)
    bus.create_schema()
    bus.register_connector(SeqConnector)
    return bus


class SeqLanesConnector(SeqConnector):
    """The same tasks under Ordering.ENTITY: one lane per counter."""

    connector_name = "SeqLanes"
    ordering = Ordering.ENTITY


class SeqCoalesceConnector(SeqConnector):
    """The Seq tasks with coalescing: a batch's tasks of one counter are applied as one."""

    connector_name = "SeqCoalesce"
    coalesce = True


class SeqLanesCoalesceConnector(SeqLanesConnector):
    """The same under Ordering.ENTITY: a lane's tasks in a batch are applied as one."""

    connector_name = "SeqLanesCoalesce"
    coalesce = True
