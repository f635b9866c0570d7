"""A small fake CRM pushing users, roles, forums and articles into syncbus.

``data.json`` is the CRM's data, ``connector.py`` the connector (and its entity-lanes twin),
``feed.py`` the tasks the CRM sends and ``demo.py`` the end-to-end run behind ``syncbus demo``.
"""

from __future__ import annotations

from syncbus.examples.crm.connector import CrmConnector, CrmEntityConnector, load_crm_data
from syncbus.examples.crm.feed import CrmTask, crm_tasks, new_hire_tasks

__all__ = [
    "CrmConnector",
    "CrmEntityConnector",
    "CrmTask",
    "crm_tasks",
    "load_crm_data",
    "new_hire_tasks",
]
