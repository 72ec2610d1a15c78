"""iHAS: instance-wise hierarchical architecture search for deep learning recommendation models."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
