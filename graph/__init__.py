"""The agent as one LangGraph graph: requester -> coder -> executor -> requester ... -> finish."""
