"""Stand-in of ``torch._utils``: PyTorch's ``CallbackRegistry``, as in torch 2.11/2.15."""

import logging

logger = logging.getLogger(__name__)


class CallbackRegistry:
    def __init__(self, name):
        self.name = name
        self.callback_list = []

    def add_callback(self, cb):
        self.callback_list.append(cb)

    def fire_callbacks(self, *args, **kwargs):
        for cb in self.callback_list:
            try:
                cb(*args, **kwargs)
            except Exception:
                logger.exception(
                    "Exception in callback for %s registered with gpu trace", self.name
                )
