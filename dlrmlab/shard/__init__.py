"""Beyond one GPU: the embedding stage sharded over ranks of ``torch.distributed``.

Plans as data (:mod:`~dlrmlab.shard.plan`), a cost model and planner (:mod:`~dlrmlab.shard.planner`),
process groups with timeouts (:mod:`~dlrmlab.shard.dist`), the sharded stage (:mod:`~dlrmlab.shard.stage`),
DLRM on it (:mod:`~dlrmlab.shard.model`), a measured run per rank (:mod:`~dlrmlab.shard.run`), the
communication model and predictions (:mod:`~dlrmlab.shard.scaling`), the ``dlrmlab shard`` command
(:mod:`~dlrmlab.shard.command`). Needs PyTorch; :mod:`~dlrmlab.shard.plan`, ``planner`` and ``scaling``
need only NumPy and pandas.
"""
