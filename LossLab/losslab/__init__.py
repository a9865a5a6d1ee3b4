"""LossLab core library: losses, metrics, networks and training for segmentation editing and
partial-label learning. Pure Python on torch, numpy, scipy and SimpleITK: it never imports slicer,
qt or vtk, so it runs in 3D Slicer, from the command line and on GPU servers alike.
"""

__version__ = "0.1.0"
