"""First code to run in the sandboxed interpreter: apply the limits, then run the program as __main__.

It runs as a script in a fresh interpreter (`python -I child.py LIMITS PROGRAM`), so limits are set by the child on
itself and the parent never forks with preexec hooks while its own model threads are running.
"""

import json
import resource
import sys


def apply_limits(limits: dict) -> None:
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def main() -> None:
    apply_limits(json.loads(sys.argv[1]))
    path = sys.argv[2]
    with open(path, encoding="utf-8", errors="replace") as handle:
        source = handle.read()
    sys.argv = [path]
    code = compile(source, path, "exec")
    exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})


main()
