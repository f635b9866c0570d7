"""Connectors loaded by import path ("tests.sample_connectors:Name") in the connector tests."""

from __future__ import annotations

from typing import Any

from syncbus import BaseIntegrationConnector, InternalObject, Ordering, TaskDataType, TaskType


class SampleConnector(BaseIntegrationConnector):
    """Names itself in init(), as Kentico connectors do; turns {"login", "mail"} into a user."""

    def init(self) -> None:
        self.connector_name = "Sample"
        self.init_calls = getattr(self, "init_calls", 0) + 1

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject | None:
        return InternalObject("cms.user", {"user_name": obj["login"], "email": obj.get("mail")})


class PrepareOnlyConnector(BaseIntegrationConnector):
    """Overrides prepare_internal_object only."""

    connector_name = "PrepareOnly"

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject | None:
        return InternalObject(obj["type"], dict(obj["data"]))


class NothingConnector(BaseIntegrationConnector):
    """Overrides nothing."""

    connector_name = "Nothing"


class EntitySampleConnector(SampleConnector):
    """SampleConnector with one lane per entity (CONTRACT §8), under another name."""

    ordering = Ordering.ENTITY

    def init(self) -> None:
        super().init()
        self.connector_name = "EntitySample"
