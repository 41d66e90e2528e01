"""Model code: YOLOX / YOLOX-PAI networks, boxes, pre/post-processing, training, export and the bundle runtime.

Never imports ``service``. Importing ``model`` itself is cheap: submodules import torch only where they need it.
"""
