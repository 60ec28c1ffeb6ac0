"""lit-imgcls: image classification on Lightning and timm, with MXNet's image-classification workflow."""

__version__ = "0.1.0"
