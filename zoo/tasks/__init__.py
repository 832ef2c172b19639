"""Task models built on a registered backbone (`zoo.registry.register_task`): FCN segmentation.

Importing this package registers them; it comes after `zoo.models`, whose
backbones the tasks default to.
"""

from zoo.tasks import fcn

__all__ = ["fcn"]
