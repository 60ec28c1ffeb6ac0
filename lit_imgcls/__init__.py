"""lit-imgcls: image classification on Lightning and timm, with MXNet's image-classification workflow."""

__version__ = "0.2.0"


def __getattr__(name: str):
    # Classifier pulls in torch and Lightning; importing it only when asked keeps `import lit_imgcls` (and --help) light.
    if name == "Classifier":
        from lit_imgcls.classifier import Classifier

        return Classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
