"""Command modules of ``yoloxpai`` that belong to the model package (see ``yoloxpai.cli``)."""
