"""Channel selection by dependency group: what a structured mask empties is what the export removes,
in residual nets too (the last convolution of every block and the shortcut write into one sum)."""
import pytest
import torch

from pruning.at_init import mask_at_init
from pruning.channel_groups import channel_groups
from pruning.config import PruneConfig
from pruning.export import channel_counts, export_channel_pruned
from pruning.mask import prunable_parameters
from training.models import ModelConfig, create_model


def _alive_rows(mask) -> dict[str, int]:
    return {n: int(m.reshape(m.shape[0], -1).any(dim=1).sum()) for n, m in mask.items()}


@pytest.mark.parametrize("model_name", ["resnet20", "tv:resnet18"])
def test_every_row_the_mask_empties_is_removed_by_the_export(model_name):
    torch.manual_seed(0)
    model = create_model(ModelConfig(name=model_name), (3, 32, 32), 10)
    convs = [n for n in prunable_parameters(model) if not n.startswith("fc")]
    keep = {n: 0.5 + 0.25 * (i % 2) for i, n in enumerate(convs)}  # coupled layers ask for different amounts
    prune = PruneConfig(method="magnitude", sparsity=0.5, channel_keep=keep)
    mask, _, _ = mask_at_init(model, prune, seed=0, input_shape=(3, 32, 32), num_classes=10)
    alive = _alive_rows(mask)
    assert any(alive[n] < mask[n].shape[0] for n in convs)  # the mask did empty channels

    with torch.no_grad():
        for n, p in prunable_parameters(model).items():
            p.mul_(mask[n])
    model.eval()
    exported = export_channel_pruned(model, mask, torch.randn(4, 3, 32, 32))
    removed = channel_counts(exported)
    names = {n.removesuffix(".weight") for n in convs}
    assert {n: removed[n] for n in names} == {n.removesuffix(".weight"): alive[n] for n in convs}


def test_coupled_layers_keep_the_same_channels_as_many_as_the_least_pruned_asks():
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="resnet20"), (3, 32, 32), 10)
    groups = channel_groups(model, list(prunable_parameters(model)), (3, 32, 32))
    stem = next(g for g in groups if "conv.weight" in g.rows)
    assert set(stem.rows) == {"conv.weight", "blocks.0.conv2.weight", "blocks.1.conv2.weight", "blocks.2.conv2.weight"}
    keep = {"conv.weight": 0.25, "blocks.0.conv2.weight": 0.5, "blocks.1.conv2.weight": 0.25,
            "blocks.2.conv2.weight": 0.25}
    mask, _, _ = mask_at_init(model, PruneConfig(method="magnitude", sparsity=0.5, channel_keep=keep), seed=0,
                              input_shape=(3, 32, 32), num_classes=10)
    rows = {n: mask[n].reshape(16, -1).any(dim=1) for n in keep}
    assert all(int(r.sum()) == 8 for r in rows.values())  # 0.5 of 16: the least-pruned member's fraction
    assert all(torch.equal(r, rows["conv.weight"]) for r in rows.values())
