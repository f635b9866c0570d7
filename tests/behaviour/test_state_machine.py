"""Property test: random task sequences against a small reference model of the state machine.

Tasks update or delete items keyed a/b/c; a task may reference an object that does not exist
yet (so it fails with "Cannot translate columns") until a "fix" step creates it. Random process
types (all five), random processing, synchronizing and deleting, and a tiny batch size so batch
boundaries fall everywhere. After every step the queue (order, process types, error history),
the content and the event log must equal the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncbus import (
    BaseIntegrationConnector,
    IntegrationBus,
    InternalObject,
    ObjectParams,
    ObjectType,
    ProcessType,
    TaskDataType,
    TaskType,
)
from tests.helpers import fresh_db_url

REF = ObjectType("prop.ref", "prop_ref", "ref_id", code_name_column="ref_name")
ITEM = ObjectType(
    "prop.item",
    "prop_item",
    "item_id",
    code_name_column="item_name",
    foreign_keys={"ref_id": "prop.ref"},
    columns={"item_name": str, "value": int},
)


class PropConnector(BaseIntegrationConnector):
    connector_name = "Prop"
    retry_delay = 0.0  # every run retries a failed SKIP_ON_ERROR task (no back-off here)
    retry_max_delay = 0.0

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject:
        if obj["type"] == "ref":
            return InternalObject("prop.ref", {"ref_name": obj["name"]})
        data: dict[str, Any] = {"item_name": obj["key"], "value": obj["value"]}
        if obj["needs_ref"]:
            data["ref_id"] = 1  # external id of the reference, translated at process time
        return InternalObject("prop.item", data)

    def get_internal_object_params(self, id: Any, object_type: str) -> ObjectParams:
        return ObjectParams(code_name=f"ref{id}")


@dataclass
class ModelTask:
    task_id: int
    key: str
    value: int
    delete: bool
    needs_ref: bool
    ptype: ProcessType
    log: int = 0  # entries written at most
    log_min: int = 0  # entries written at least: an automatic retry that fails with the
    # same error as the entry before it, within a second, writes none (issue 10, item 18)


@dataclass
class Model:
    queue: list[ModelTask] = field(default_factory=list)
    content: dict[str, int] = field(default_factory=dict)
    ref_exists: bool = False
    events: int = 0

    def fails(self, t: ModelTask) -> bool:
        return t.needs_ref and not self.ref_exists

    def apply(self, t: ModelTask) -> None:
        if t.delete:
            self.content.pop(t.key, None)
        else:
            self.content[t.key] = t.value
        self.queue.remove(t)

    def process(self) -> None:
        for t in list(self.queue):
            if t.ptype is ProcessType.ERROR:
                return
            if t.ptype is ProcessType.SKIP_ONCE:
                t.ptype = ProcessType.DEFAULT
                continue
            if not self.fails(t):
                self.apply(t)
            elif t.ptype is ProcessType.DEFAULT:
                t.ptype, t.log, t.log_min = ProcessType.ERROR, t.log + 1, t.log_min + 1
                return
            elif t.ptype is ProcessType.SKIP_ON_ERROR:  # each attempt writes one entry
                t.log, t.log_min = t.log + 1, t.log_min + 1
            else:  # DELETE_ON_ERROR
                self.queue.remove(t)
                self.events += 1

    def synchronize(self, t: ModelTask) -> bool:
        """A failed manual run keeps the process type, except that DEFAULT becomes ERROR;
        an operator's attempt is always written to the log."""
        if self.fails(t):
            if t.ptype is ProcessType.DEFAULT:
                t.ptype = ProcessType.ERROR
            t.log, t.log_min = t.log + 1, t.log_min + 1
            return False
        self.apply(t)
        return True


log_step = st.tuples(
    st.just("log"),
    st.sampled_from("abc"),
    st.integers(0, 99),
    st.booleans(),  # delete?
    st.booleans(),  # needs the reference?
    st.sampled_from(list(ProcessType)),
)
steps = st.lists(
    st.one_of(
        log_step,
        log_step,
        st.tuples(st.just("process")),
        st.tuples(st.just("sync"), st.integers(0, 20)),
        st.tuples(st.just("delete"), st.integers(0, 20)),
        st.tuples(st.just("fix")),
    ),
    max_size=30,
)


def _check(bus: IntegrationBus, model: Model) -> None:
    tasks = bus.list_tasks("Prop")
    assert [(t.task_id, t.process_type) for t in tasks] == [
        (t.task_id, t.ptype) for t in model.queue
    ]
    for t in model.queue:
        log = bus.task_log(t.task_id)
        assert t.log_min <= len(log) <= t.log
        assert all("Cannot translate columns" in e.error_message for e in log)
    content = {r["item_name"]: r["value"] for r in bus.find_objects("prop.item")}
    assert content == model.content
    events = [e for e in bus.event_log() if e.code == "DELETEONERROR"]
    assert len(events) == model.events


def _run(url: str, ops: list[tuple[Any, ...]]) -> None:
    bus = IntegrationBus(url, batch_size=3)
    try:
        bus.register_object_type(REF)
        bus.register_object_type(ITEM)
        bus.create_schema()
        bus.register_connector(PropConnector)
        model = Model()
        for op in ops:
            kind = op[0]
            if kind == "log":
                _, key, value, delete, needs_ref, ptype = op
                task_id = bus.process_external_task(
                    "Prop",
                    {"type": "item", "key": key, "value": value, "needs_ref": needs_ref},
                    process_type=ptype,
                    task_type=TaskType.DELETE_OBJECT if delete else TaskType.UPDATE_OBJECT,
                    data_type=TaskDataType.SIMPLE_SNAPSHOT,
                )
                assert task_id is not None
                model.queue.append(ModelTask(task_id, key, value, delete, needs_ref, ptype))
            elif kind == "process":
                result = bus.process_tasks("Prop")["Prop"]
                model.process()
                assert result.not_run_reason is None
            elif kind in ("sync", "delete") and model.queue:
                t = model.queue[op[1] % len(model.queue)]
                if kind == "sync":
                    assert bus.synchronize_task(t.task_id) is model.synchronize(t)
                else:
                    bus.delete_task(t.task_id)
                    model.queue.remove(t)
            elif kind == "fix" and not model.ref_exists:
                bus.register_connector(_FixConnector)
                bus.process_external_task("Fix", {"type": "ref", "name": "ref1"})
                assert bus.process_tasks("Fix")["Fix"].applied == 1
                model.ref_exists = True
            _check(bus, model)
    finally:
        bus.close()


class _FixConnector(PropConnector):
    connector_name = "Fix"


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
@pytest.mark.slow
def test_state_machine_matches_reference_model(
    backend: str, request: pytest.FixtureRequest
) -> None:
    template = request.getfixturevalue(f"{'pg' if backend == 'postgres' else 'sqlite'}_template")

    @settings(
        max_examples=40 if backend == "sqlite" else 20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(ops=steps)
    def check(ops: list[tuple[Any, ...]]) -> None:
        url, drop = fresh_db_url(backend, template)
        try:
            _run(url, ops)
        finally:
            if drop is not None:
                drop()

    check()
