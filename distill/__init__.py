"""Dataset distillation: small synthetic training sets for cheaper mask search.

* ``distill.augment``: differentiable Siamese augmentation (DSA) for images and 1-D signals;
* ``distill.artifact``: ``DistilledSet`` (the saved artifact), ``save_picture``, checkpoint helpers;
* ``distill.methods``: ``DistillConfig``, the ``DISTILLERS`` registry and ``distill_dataset``;
* ``distill.coresets`` (random / herding / k-means), ``distill.dm`` (distribution matching), and, when
  present, ``distill.dc`` (DC / DSA) and ``distill.mtt``;
* ``distill.evaluate``: the quality protocol (train fresh nets on the set, test on real data).
"""
from .artifact import DistilledSet, save_picture
from .augment import Augment, default_augment
from .methods import DISTILLERS, DistillConfig, distill_dataset

__all__ = ["Augment", "DISTILLERS", "DistillConfig", "DistilledSet", "default_augment", "distill_dataset", "save_picture"]
