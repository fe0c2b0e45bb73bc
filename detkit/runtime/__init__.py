"""detkit.runtime: where and how the code runs; the bottom layer that every other package may use.

    device.py       resolve_device ("cpu", "cuda", "cuda:N", "auto") with one clear error, CUDA settings
    precision.py    Precision (fp32 / bf16 / fp16 autocast) and resolve_precision for a device
    memory_format.py resolve_memory_format: model.memory_format's auto -> channels_last or contiguous
    distributed.py  the process context under torchrun (rank, world size), process groups, DDP wrapping,
                    and the collectives (broadcast, gather, mean over processes)

It imports nothing of detkit but errors and config.
"""
