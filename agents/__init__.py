"""The roles (requester, coder, executor) and the machinery that runs models for them."""
