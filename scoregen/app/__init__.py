"""The application: the ``scoregen`` command."""
