"""A package of two modules for the Python frames scenario."""
