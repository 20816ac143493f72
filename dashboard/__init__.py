"""Panel dashboard: ``panel serve dashboard/app.py`` or, in a notebook, ``ExplorerApp()``."""


def __getattr__(name):
    # imported lazily so `import dashboard.plots` does not build any app machinery
    if name == "ExplorerApp":
        from .app import ExplorerApp
        return ExplorerApp
    raise AttributeError(name)
