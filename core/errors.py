"""Exception types, one per layer of the stack, each a ValueError naming what was wrong."""


class SpecError(ValueError):
    """A model spec that cannot be built: unknown name, invalid group for the model, bad size."""
