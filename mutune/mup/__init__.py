"""The µP core: which dims of each parameter scale along which axis, the parametrizations' rule
tables, the forward multipliers and the optimizers' param groups.

One concept per module, importing nothing of the spec, the study or the CLI:

- :mod:`.axes`: the scaling axes (width, depth), each with its multipliers; torch-free.
- :mod:`.rules`: the vocabulary of a rule table (:class:`~.rules.Scaling`, :class:`~.rules.RoleRule`); torch-free.
- :mod:`.parametrizations`: µP and SP as registered objects, each with its table, init, forward
  multipliers, clipping rule and what the coord check expects of it; torch-free.
- :mod:`.optimizers`: the optimizer registry (which rule kind each parameter gets, the
  hyperparameters each optimizer reads); torch-free.
- :mod:`.shapes`: classifying a model's parameters along the axes (on the meta device).
- :mod:`.init`, :mod:`.multipliers`, :mod:`.hooks`, :mod:`.optim`: applying the rules to a torch model.

This package's ``__init__`` imports nothing, so the torch-free modules load without torch.
"""
