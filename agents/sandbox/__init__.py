"""Runs untrusted, model-written Python outside this process, with limits, and returns a typed result."""

from agents.sandbox.runner import ExecutionResult, Sandbox, SandboxLimits

__all__ = ["ExecutionResult", "Sandbox", "SandboxLimits"]
