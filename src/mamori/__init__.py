"""mamori (守り): a security-first electronic medical record server for small Japanese clinics."""

__version__ = "0.1.0"
