"""The composition at the top: the ``jobpulse`` command and what spans components.

``main`` builds the command from each component's own ``cli.py``; ``breakdown`` (a table
of what Redis holds) and ``demo`` (every component at once) live here because they belong
to no single component. Nothing below this package imports it.
"""
