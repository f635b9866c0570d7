"""The content repository: object types, the page tree, and the operations tasks apply.

``types`` declares object and page types (``builtin``: the pre-registered ones), ``tables``
builds their tables, ``registry`` knows every type of one bus, ``validation`` holds every
log-time check of a value, object or page, ``coerce`` brings decoded values to their column
types, ``objects`` and ``pages`` read and write, and ``caches`` keeps a batch's lookups.
"""
