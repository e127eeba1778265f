"""Pretrained backbones: architectures whose ImageNet weights come from a package."""
