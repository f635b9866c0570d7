"""The content repository: object types, the page tree, and the operations tasks apply."""
