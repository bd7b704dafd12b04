"""SegNet in PyTorch: a faithful, fast reproduction of Badrinarayanan et al., TPAMI 2017."""
__version__ = "0.1.0"
