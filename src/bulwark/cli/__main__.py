"""``python -m bulwark.cli``: the ``bulwark`` command without its installed script."""

from bulwark.cli import app

app()
