"""Models: timm ViT backbones (vit.py), MoCo (moco.py)."""
