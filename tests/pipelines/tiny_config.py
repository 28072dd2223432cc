"""The smallest valid config the pipeline tests start from (digits, a 16-unit MLP, one epoch): each
test breaks or extends it in the one place it is about."""
TINY = """
name: t
data: {name: digits}
model: {name: mlp, options: {widths: [16]}}
train: {epochs: 1, batch_size: 64}
prune: {method: magnitude, sparsity: 0.5}
"""
