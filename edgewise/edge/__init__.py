"""The device half: a torch-free runtime. Nothing under this package may import torch."""
