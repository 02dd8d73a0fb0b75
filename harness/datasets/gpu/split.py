"""A split's uint8 images and labels resident on the accelerator, served in batches.

The authors' pipeline decodes PIL images one by one in DataLoader workers; on a GPU that
leaves the device idle. Here the images live on the device (or in shared host memory, streamed
in chunks through a pinned staging buffer when too large) and a batch is one index_select.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

# Fraction of the device's free memory a split may take before it stays in host memory.
DEVICE_MEMORY_SHARE = 0.5


def _to_nchw_uint8(images: Any, layout: str) -> torch.Tensor:
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 (got {tensor.dtype}); convert raw pixels, not floats"
        )
    if layout == "auto":
        if tensor.ndim == 3:
            layout = "NHW"
        elif tensor.ndim == 4 and tensor.shape[-1] in (1, 3) and tensor.shape[1] not in (1, 3):
            layout = "NHWC"
        else:
            layout = "NCHW"
    if layout == "NHW":
        tensor = tensor.unsqueeze(1)
    elif layout == "NHWC":
        tensor = tensor.permute(0, 3, 1, 2)
    elif layout != "NCHW":
        raise ValueError(f"unknown layout {layout!r}; valid: auto, NCHW, NHWC, NHW")
    if tensor.ndim != 4:
        raise ValueError(
            f"images must have 4 dimensions in layout {layout} (got {tuple(tensor.shape)})"
        )
    return tensor.contiguous()


class DeviceSplit:
    """One split's uint8 images (N, C, H, W) and int64 labels, served in batches on `device`.

    storage="device" keeps the images on the device; "host" keeps them in host memory and
    copies each chunk of batches through a pinned buffer (datasets too large for the device,
    e.g. PCam's 7 GB); "auto" picks "device" when the images take at most half the free device
    memory. Host storage can be moved to shared memory (`share_memory_()`), and CUDA storage is
    shared by torch.multiprocessing, so jobs packed as processes on one GPU map the same data.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        device: torch.device | str = "cpu",
        storage: str = "auto",
        chunk_batches: int = 32,
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(
                "images must be a uint8 tensor (N, C, H, W); use DeviceSplit.from_arrays"
            )
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if storage not in ("auto", "device", "host"):
            raise ValueError(f"unknown storage {storage!r}; valid: auto, device, host")
        self.device = torch.device(device)
        if storage == "auto":
            storage = "device" if self._fits_on_device(images) else "host"
        self.storage = storage
        home = self.device if storage == "device" else torch.device("cpu")
        self.images = images.to(home)
        self.labels = torch.as_tensor(labels).to(device=self.device, dtype=torch.int64)
        self.chunk_batches = chunk_batches
        self._staging: list[torch.Tensor] = []
        self._copied: list[Any] = []  # per staging buffer: CUDA event of its last copy

    @classmethod
    def from_arrays(
        cls,
        images: Any,
        labels: Any,
        device: torch.device | str = "cpu",
        layout: str = "auto",
        storage: str = "auto",
    ) -> DeviceSplit:
        """From numpy arrays or tensors: images uint8 in NCHW, NHWC or NHW (grayscale) layout."""
        labels_tensor = torch.as_tensor(labels).reshape(-1)
        return cls(_to_nchw_uint8(images, layout), labels_tensor, device, storage)

    @classmethod
    def from_split(
        cls,
        split: Any,
        device: torch.device | str = "cpu",
        storage: str = "auto",
        read_chunk: int = 8192,
    ) -> DeviceSplit:
        """From a `datasets.Split` (uint8 NCHW images, numpy or a lazy reader such as PCam's
        HDF5), read in chunks so a lazy reader never materialises a second full copy."""
        count = len(split)
        first = np.asarray(split.images[0:1])
        images = torch.empty((count, *first.shape[1:]), dtype=torch.uint8)
        for start in range(0, count, read_chunk):
            chunk = np.asarray(split.images[start : start + read_chunk])
            images[start : start + len(chunk)] = torch.from_numpy(np.ascontiguousarray(chunk))
        return cls(images, torch.as_tensor(np.asarray(split.labels)), device, storage)

    def _fits_on_device(self, images: torch.Tensor) -> bool:
        if self.device.type != "cuda":
            return True
        free, _total = torch.cuda.mem_get_info(self.device)
        return images.numel() <= DEVICE_MEMORY_SHARE * free

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def share_memory_(self) -> DeviceSplit:
        """Move host-resident images to shared memory so child processes map, not copy, them."""
        if self.images.device.type == "cpu":
            self.images.share_memory_()
        if self.labels.device.type == "cpu":
            self.labels.share_memory_()
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Staging buffers are per process (pinned memory does not cross processes).
        state = dict(self.__dict__)
        state["_staging"] = []
        state["_copied"] = []
        return state

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (uint8, on the device) and labels for the given sample indices."""
        labels = self.labels.index_select(0, index.to(self.labels.device))
        if self.storage == "device":
            return self.images.index_select(0, index.to(self.images.device)), labels
        return self._gather_host(index.cpu()), labels

    def _gather_host(self, index: torch.Tensor, slot: int = 0) -> torch.Tensor:
        if self.device.type != "cuda":
            return self.images.index_select(0, index)
        while len(self._staging) <= slot:
            self._staging.append(torch.empty(0, dtype=torch.uint8).pin_memory())
            self._copied.append(None)
        shape = (len(index), *self.images.shape[1:])
        size = len(index) * self.images[0].numel()
        if self._copied[slot] is not None:
            # The previous copy out of this buffer must finish before it is overwritten; it
            # was issued a whole chunk ago, so this rarely waits.
            self._copied[slot].synchronize()
        if self._staging[slot].numel() < size:
            self._staging[slot] = torch.empty(size, dtype=torch.uint8).pin_memory()
        out = self._staging[slot][:size].view(shape)
        torch.index_select(self.images, 0, index, out=out)
        on_device = out.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self._copied[slot] = event
        return on_device

    def epoch(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in batches (the last one partial unless drop_last), order from `generator`."""
        count = len(self)
        if shuffle:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            order = torch.randperm(count, generator=generator, device=gen_device)
        else:
            order = torch.arange(count)
        stop = count - count % batch_size if drop_last else count
        if self.storage == "device":
            order = order.to(self.device)
            for start in range(0, stop, batch_size):
                yield self.batch(order[start : start + batch_size])
            return
        # Host storage: gather a chunk of batches at once into a pinned buffer, copy it to the
        # device asynchronously, and alternate two buffers so the next gather overlaps compute.
        order = order.cpu()
        chunk = batch_size * self.chunk_batches
        for number, chunk_start in enumerate(range(0, stop, chunk)):
            index = order[chunk_start : min(chunk_start + chunk, stop)]
            images = self._gather_host(index, slot=number % 2)
            labels = self.labels.index_select(0, index.to(self.labels.device))
            for start in range(0, len(index), batch_size):
                yield images[start : start + batch_size], labels[start : start + batch_size]
