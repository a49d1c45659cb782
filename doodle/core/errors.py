"""The one base class of the errors a user can fix (a param, a path, an input file).

Stages print these as one line and exit with status 2 (``stages.cli.run``), without a
traceback; anything else is a bug and keeps its traceback. Kept in its own tiny module so the
command-line wrapper that catches them imports nothing else of the project.
"""


class UserError(Exception):
    """An error whose message alone tells the user what to fix."""
