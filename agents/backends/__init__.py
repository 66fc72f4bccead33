"""Generation behind one async interface: token ids in, token ids and log-probabilities out."""
