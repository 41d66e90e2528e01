"""Training and evaluation data: COCO-format datasets, the synthetic shapes set, augmentation and loaders.

Module map (import the submodule you need; this package imports nothing at import time):
- ``coco``: ``CocoDetection`` (json + image folder -> uint8 BGR image, boxes_xyxy, labels).
- ``layout``: ``resolve_split(data, split) -> (ann_file, image_dir)`` (also re-exported by ``coco``).
- ``errors``: ``DatasetError`` (bad dataset files; the message names the file).
- ``shapes``: the synthetic COCO-format shapes dataset (``make_shapes_dataset``), drawn by ``shapes_draw``.
- ``augment_config``: ``AugmentConfig`` presets (Megvii default / nano / tiny, EasyCV ``pai``).
- ``geometry``, ``photometric``, ``mix``: the individual numpy/OpenCV augmentations.
- ``augment``: ``Augmenter``, the pipeline that chains them (mosaic -> affine -> mixup -> colour -> flip -> letterbox).
- ``train_dataset``, ``loader``: the torch side (``TrainDataset``, ``build_train_loader``, ``build_eval_loader``).

Only ``train_dataset`` and ``loader`` import torch.
"""
