"""The BEN2 base network: ``from ben_core.model import BENBase``."""
from .ben2 import BENBase

__all__ = ["BENBase"]
