"""yoloxpai: the distribution's version and its single command-line entry point (``yoloxpai.cli``).

Kept tiny on purpose: ``model`` and ``service`` are the real packages; this one dispatches and holds the
Python client (``yoloxpai.client``), and imports nothing at package import time.
"""

__version__ = "0.1.0"
