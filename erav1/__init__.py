"""erav1: ResNet18 on CIFAR-10, from training to Grad-CAM, as a package and a book."""

__version__ = "0.1.0"
