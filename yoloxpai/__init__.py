"""yoloxpai: the distribution's version and its single command-line entry point (``yoloxpai.cli``).

Kept tiny on purpose: ``model`` and ``service`` are the real packages; this one only dispatches.
"""

__version__ = "0.1.0"
