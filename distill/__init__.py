"""Dataset distillation: small synthetic training sets for cheaper mask search.

* ``distill.config``: the settings (``DistillConfig``), method and op names, importing no torch;
* ``distill.augment``: differentiable Siamese augmentation (DSA) for images and 1-D signals;
* ``distill.artifact``: ``DistilledSet`` (the saved artifact), ``save_picture``, checkpoint helpers;
* ``distill.methods``: ``DistillConfig``, the ``DISTILLERS`` registry and ``distill_dataset``;
* ``distill.coresets`` (random / herding / k-means), ``distill.dm`` (distribution matching), and, when
  present, ``distill.dc`` (DC / DSA) and ``distill.mtt``;
* ``distill.evaluate``: the quality protocol (train fresh nets on the set, test on real data).
"""
