"""A cache class whose method keeps every value."""


class Cache:
    def __init__(self):
        self.items = {}

    def add(self, key, size):
        self.items[key] = bytearray(size)  # LEAK-B
