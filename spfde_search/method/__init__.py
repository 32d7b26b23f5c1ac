"""The SpFDE method as pure pieces (torch only, no Ray, Optuna or MLflow).

- ``sparsity``: layer densities, the ``Masker``, DST algorithms (drop score + grow score).
- ``freezing``: freezable units, the T_frz solver, schemes, per-unit cosine LR.
- ``sieving``: forgetting counts and the circular removed-set queue.
- ``flops``: per-layer FLOPs, the prediction from the config alone, the memory estimate.
- ``plan``: the epoch plan, every boundary rule in one place (executed by the trainer, summed by ``flops``).
"""
