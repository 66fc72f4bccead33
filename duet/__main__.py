"""`python -m duet`, which is also how `accelerate launch -m duet train ...` starts one process per device."""

from duet.cli import app

app()
