"""Training: ``TrainConfig`` (``config``), the plain loop (``loop.train``) and its parts.

Module map: ``config`` (stdlib only), ``defaults`` (the CLI's fine-tune and short-run defaults, stdlib), ``recipe``
(Megvii / EasyCV defaults, stdlib), ``budget`` (time-budget planning arithmetic, stdlib), ``calibrate`` (measures
a run's costs and applies a budget plan), ``run`` (build model/data/optimizer, resume), ``loop`` (the loop, eval,
checkpoints), ``optim`` (parameter groups, lr schedule), ``ema``, ``multiscale``, ``distributed`` (DDP wrapping and
the training-only collectives),
``checkpoint`` (atomic writes, rng state), ``monitor`` (progress bar, TensorBoard, JSONL). Shared with evaluation,
so kept below this package: ``model.inputs`` (input convention on the device) and ``model.distributed`` (process
group, ``DistContext``). This package imports nothing at import time.
"""
