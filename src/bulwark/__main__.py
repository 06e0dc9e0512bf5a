"""``python -m bulwark``: the ``bulwark`` command."""

from bulwark.cli import app

if __name__ == "__main__":
    app()
