"""Python config files, one per system of the report; each exposes `get_config()`."""
