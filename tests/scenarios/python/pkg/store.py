"""A module-level store that never forgets."""

_kept = []


def remember(count, size):
    for _ in range(count):
        _kept.append(bytearray(size))  # LEAK-A


def kept():
    return _kept
