"""The duet command line: thin commands that delegate to agents/, graph/ and training/."""
