"""The base class of errors caused by user input, which the command line reports without a traceback."""


class UserError(Exception):
    """Bad input (config, data, model or file); the message names the value and the fix."""
