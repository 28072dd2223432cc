"""The result columns pruning's stages produce: the evaluation of the pruned network (``evaluate``'s
``result.json``) and the exported network (``export``'s ``export.json``).

Torch-free, so a config's objectives are checked without loading torch (``search.space`` reads the
objective columns from here).
"""
from __future__ import annotations

from training.columns import Column

EVALUATE_COLUMNS = (
    Column("test_accuracy", "float", "top-1 accuracy of the retrained sparse network on the test split", required=True,
           objective=True),
    Column("val_accuracy", "float", "the same on the validation split (held out of training; what searches "
           "should select on)", required=True, objective=True),
    Column("test_loss", "float", "mean cross-entropy on the test split"),
    Column("achieved_sparsity", "float", "fraction of the prunable weights the mask removed", required=True),
    Column("density", "float", "fraction of the prunable weights kept (1 - achieved_sparsity)", objective=True),
    Column("compression", "float", "prunable weights over kept weights"),
    Column("kept_params", "int", "prunable weights kept"),
    Column("prunable_params", "int", "weights the method may prune"),
    Column("dense_params", "int", "every parameter of the dense network"),
    Column("remaining_params", "int", "parameters left: dense_params less the pruned weights", objective=True),
    Column("dense_flops", "int", "FLOPs of one forward pass of the dense network"),
    Column("flops", "int", "FLOPs of one forward pass with the pruned weights skipped", objective=True),
    Column("collapsed", "bool", "a layer kept no weights (the network cannot pass a signal through it)"),
    Column("collapsed_layers", "str", "the layers that kept no weights, comma-separated"),
)

EXPORT_COLUMNS = (
    Column("export_params", "int", "parameters of the exported network (empty channels and heads removed)",
           objective=True, needs_export=True),
    Column("export_flops", "int", "FLOPs of one forward pass of the exported network", objective=True,
           needs_export=True),
    Column("export_channels", "int", "output channels left in the exported network", needs_export=True),
    Column("latency_ms", "float", "median forward latency of the exported network at export.latency_batch",
           objective=True, needs_export=True),
    Column("dense_latency_ms", "float", "the same for the dense network, timed interleaved", needs_export=True),
    Column("latency_speedup", "float", "dense_latency_ms over latency_ms", needs_export=True),
    Column("batch_latency_ms", "float", "median latency at export.throughput_batch", needs_export=True),
    Column("dense_batch_latency_ms", "float", "the same for the dense network", needs_export=True),
    Column("batch_latency_speedup", "float", "dense_batch_latency_ms over batch_latency_ms", needs_export=True),
    Column("latency_device", "str", "where the latencies were measured", needs_export=True),
    Column("sparse24_latency_ms", "float", "latency with 2:4 semi-structured kernels (CUDA only)", needs_export=True),
    Column("sparse24_dense_latency_ms", "float", "the dense latency those kernels are compared with",
           needs_export=True),
    Column("sparse24_note", "str", "why the 2:4 columns are empty, when they are", needs_export=True),
)


def objective_names() -> tuple[str, ...]:
    """The columns a search may optimise or constrain, in declaration order."""
    return tuple(c.name for c in (*EVALUATE_COLUMNS, *EXPORT_COLUMNS) if c.objective)


def export_objective_names() -> tuple[str, ...]:
    """The objectives that need ``export.enabled``."""
    return tuple(c.name for c in EXPORT_COLUMNS if c.objective)
