"""Sample integrations that ship with syncbus (run them with ``syncbus demo``)."""
