"""dcv: differential circuit vulnerability, a measured answer to which circuits fine-tuning breaks."""

__version__ = "0.1.0"
