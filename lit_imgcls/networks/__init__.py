"""lit-imgcls's own networks (MXNet's symbols), registered into timm; every other name is timm's."""

from lit_imgcls.networks.factory import create_network, load_pretrained, network_names

__all__ = ["create_network", "load_pretrained", "network_names"]
