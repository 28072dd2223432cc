"""The ``export`` stage: a trial's trained, masked network made physically smaller and timed.

Reads the trial's final weights and mask, removes what the mask empties (``pruning.export``), checks the
result against the masked network, and measures dense vs exported latency on the trial's device
(``pruning.latency``), plus the 2:4 sparse kernel where the mask is 2:4 and the GPU can run it. Its key
holds the device: a latency belongs to the hardware it was measured on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from training.cost import count_flops
from training.data import DataConfig
from training.keys import canonical
from training.models import ModelConfig
from training.stage import Stage, StageEnv, fresh_model, load_state, register_stage, write_json
from training.store import Entry
from training.trainer import resolve_device

from .config import ExportConfig
from .export import channel_counts, export_channel_pruned
from .latency import semi_structured_latency, time_forward
from .stages import load_mask


@register_stage
@dataclass(eq=False)
class Export(Stage):
    name: ClassVar[str] = "export"
    reads: ClassVar[tuple[str, ...]] = ('data', 'model', 'export')
    trained: Stage  # writes model.pt
    mask: Stage
    data: DataConfig
    model: ModelConfig
    export: ExportConfig
    device: str
    seed: int

    def settings(self) -> dict[str, Any]:
        return {"data": canonical(self.data), "model": canonical(self.model), "export": canonical(self.export),
                "device": self.device}

    def inputs(self) -> dict[str, Stage]:
        return {"trained": self.trained, "mask": self.mask}

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> None:
        data = env.data(self.data)
        model = fresh_model(data, self.model, self.seed)
        model.load_state_dict(load_state(inputs["trained"], "model.pt"))
        mask = load_mask(inputs["mask"])
        device = resolve_device(self.device)
        model = model.to(device).eval()  # the trained masked network (evaluate checked its pruned weights are 0)
        probe = data.train.x[:8].to(device)  # real inputs: what the removed channels' constants are checked on
        exported = export_channel_pruned(model, mask, probe)
        cfg = self.export
        gen = torch.Generator().manual_seed(self.seed)
        one = torch.randn(cfg.latency_batch, *data.input_shape, generator=gen).to(device)
        batch = torch.randn(cfg.throughput_batch, *data.input_shape, generator=gen).to(device)
        single = time_forward({"dense": model, "export": exported}, one, cfg.warmup, cfg.repeats)
        many = time_forward({"dense": model, "export": exported}, batch, cfg.warmup, cfg.repeats)
        sparse, note = semi_structured_latency(model, mask, batch, cfg.warmup, cfg.repeats)
        threads = torch.get_num_threads() if device.type == "cpu" else None
        label = (torch.cuda.get_device_name(device) if device.type == "cuda"
                 else f"cpu ({threads} threads, {os.cpu_count()} cores)")
        write_json({
            "export_params": sum(p.numel() for p in exported.parameters()),
            "export_flops": count_flops(exported.cpu(), data.input_shape),
            "export_channels": sum(channel_counts(exported).values()),
            "latency_ms": single["export"], "dense_latency_ms": single["dense"],
            "latency_speedup": single["dense"] / single["export"],
            "batch_latency_ms": many["export"], "dense_batch_latency_ms": many["dense"],
            "batch_latency_speedup": many["dense"] / many["export"],
            "latency_device": label,
            "sparse24_latency_ms": sparse["sparse24"] if sparse else None,
            "sparse24_dense_latency_ms": sparse["dense"] if sparse else None,
            "sparse24_note": note,
        }, out, "export.json")
