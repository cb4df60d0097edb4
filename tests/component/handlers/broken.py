"""A handler module whose import fails, as a module with a bad top-level statement does."""

raise RuntimeError("cannot connect to the database at import time")
