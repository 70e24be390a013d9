"""The labeling app: annotators rank model responses in the browser; admins run projects and export TRL data.

Never imports torch, transformers or rlhf: annotators' machines and the web server stay light.
"""

__version__ = "0.1.0"
