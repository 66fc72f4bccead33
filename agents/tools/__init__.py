"""Tools the requester can ask: the registry (registry.py), the built-ins (builtin.py), calling a tool safely
(calling.py) and resolving a name the registry does not hold (routing.py)."""
