"""``RegistryError`` apart from models/registry.py: the command line catches it without importing the
record classes (Faust's models: over half a second of every command's start)."""


class RegistryError(ValueError):
    """A registry file that cannot be used: the message names the entry and field at fault."""
